//! Memory hot-remove and ZONE_DEVICE teardown against GUP-fast, with the
//! incidental grace periods of v6.18: which sequences they close, and the
//! one that stays open (the seed's race).
//!
//! Each test forces one interleaving with holds: a CPU in GUP-fast loads a
//! PTE and is held inside its IRQ-disabled region (at the first step after
//! `ptep_get_lockless` of every configuration, `try_get_folio`'s
//! `page_folio`) while the other CPU works, then goes on. Each verdict
//! names the kernel configuration it holds for.

use mmsim_facade::sched::Mode;
use mmsim_model::detect::{Kind, Violation};
use mmsim_model::kernel::cpu::Died;
use mmsim_model::kernel::rcu_sync::GpState;
use mmsim_model::machine::MemRange;
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::memory_hotplug::*;
use mmsim_model::mm::memremap::{PgmapType, kill_dev_dax, memremap_pages, memunmap_pages};
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::safeguards::{Safeguards, Sg};
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Arch, KernelConfig, Machine, MachineConfig, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn machine(arch: Arch, sg: &[(Sg, bool)], dimm_blocks: u64, device: bool) -> Arc<Machine> {
    machine_with(arch, sg, KernelConfig::default(), dimm_blocks, 0, device)
}

/// A machine for kernel configuration `cfg`, the DIMM on node `dimm_node`.
fn machine_with(
    arch: Arch,
    sg: &[(Sg, bool)],
    cfg: KernelConfig,
    dimm_blocks: u64,
    dimm_node: u32,
    device: bool,
) -> Arc<Machine> {
    let mut s = Safeguards::for_config(&cfg);
    for &(g, on) in sg {
        s.set(g, on);
    }
    let mut ranges = vec![RangeConfig {
        name: "boot".into(),
        kind: RangeKind::Boot,
        bytes: 32 << 20,
        node: 0,
    }];
    if dimm_blocks > 0 {
        ranges.push(RangeConfig {
            name: "dimm".into(),
            kind: RangeKind::Hotplug,
            bytes: dimm_blocks * (2 << 20),
            node: dimm_node,
        });
    }
    if device {
        ranges.push(RangeConfig {
            name: "dax".into(),
            kind: RangeKind::Device,
            bytes: 2 << 20,
            node: 0,
        });
    }
    Machine::new(MachineConfig {
        nr_cpus: 3,
        section_shift: 21,
        ranges,
        arch,
        safeguards: s,
        config: cfg,
        mode: Mode::Native,
        hooks: true,
        ..Default::default()
    })
    .unwrap()
}

/// Adds and onlines the DIMM (movable), maps one anonymous page that lands
/// in its first block, and returns the mm and the address.
fn dimm_page(m: &Arc<Machine>) -> (Arc<MmStruct>, VirtAddr, MemRange) {
    let boot = m.boot_cpu();
    let dimm = m.range("dimm").unwrap().clone();
    add_memory(&boot, dimm.start, dimm.nr_pages).unwrap();
    let mut b = dimm.start;
    while b < dimm.end() {
        memory_block_online(&boot, b, ZoneType::Movable).unwrap();
        b = b.add(m.block_pages());
    }
    let mm = mm_alloc(&boot).unwrap();
    for c in 0..3 {
        use_mm(&m.cpu(c), &mm);
    }
    let a = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    // The task prefers the DIMM's node (numactl --preferred), as a user of
    // CXL memory would: node 0's zonelist starts with node 0's own zones.
    boot.set_mempolicy(Some(dimm.node));
    access_user(&boot, &mm, a, Some(0x5eed)).unwrap();
    boot.set_mempolicy(None);
    let pfn = {
        let c = m.cpu(2);
        let mut pages = Vec::new();
        c.run(|| get_user_pages_fast(&c, &mm, a, 1, 0, &mut pages))
            .unwrap()
            .unwrap();
        c.run(|| put_user_pages(&c, &pages)).unwrap();
        pages[0]
    };
    assert!(
        dimm.start <= pfn && pfn < dimm.end(),
        "the page is in the DIMM"
    );
    (mm, a, dimm)
}

fn walker(
    m: &Arc<Machine>,
    mm: &Arc<MmStruct>,
    a: VirtAddr,
) -> JoinHandle<Result<Result<usize, mmsim_model::Errno>, Died>> {
    let (cpu, mm) = (m.cpu(0), mm.clone());
    std::thread::spawn(move || {
        let r = cpu.run(|| {
            let mut pages = Vec::new();
            let r = pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages);
            unpin_user_pages(&cpu, &pages);
            r
        });
        cpu.finish();
        r
    })
}

fn remover(
    m: &Arc<Machine>,
    dimm: &MemRange,
) -> JoinHandle<Result<Result<(), mmsim_model::Errno>, Died>> {
    let (cpu, start, nr) = (m.cpu(1), dimm.start, dimm.nr_pages);
    std::thread::spawn(move || {
        let r = cpu.run(|| offline_and_remove_memory(&cpu, start, nr));
        cpu.finish();
        r
    })
}

/// Holds the walker (cpu0) right after it loaded its PTE, IRQs off: at
/// DEBUG_VM's `pfn_valid()` check where the kernel has one, else at
/// `try_get_folio()`'s `page_folio()`.
fn hold_walker(m: &Machine) -> mmsim_facade::sched::HoldId {
    if m.config.debug_vm {
        m.ctx.hold(0, "pfn_valid", "valid_section", 0)
    } else {
        m.ctx.hold(0, "try_get_folio", "page_folio", 0)
    }
}

fn kinds(v: &[Violation]) -> Vec<Kind> {
    v.iter().map(|v| v.kind).collect()
}

/// The walker loads the PTE after the remover's lru_cache_disable() of the
/// last (only) block and is held; the remover migrates the page away,
/// offlines and removes the block. `waits` says where, if anywhere, the
/// remover is expected to block for the walker.
fn open_sequence(
    arch: Arch,
    sg: &[(Sg, bool)],
    waits: Option<&str>,
) -> (Vec<Violation>, Option<GpState>) {
    open_sequence_with(
        arch,
        sg,
        KernelConfig::default(),
        0,
        Resume::AfterRemoval,
        waits,
    )
}

/// When the held walker resumes if the remover does not wait for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// After the memmap was freed.
    AfterRemoval,
    /// After the block went offline (and was poisoned, with DEBUG_VM),
    /// before the memmap is freed.
    BeforeRemoval,
}

fn open_sequence_with(
    arch: Arch,
    sg: &[(Sg, bool)],
    cfg: KernelConfig,
    dimm_node: u32,
    resume: Resume,
    waits: Option<&str>,
) -> (Vec<Violation>, Option<GpState>) {
    let m = machine_with(arch, sg, cfg, 1, dimm_node, false);
    let (mm, a, dimm) = dimm_page(&m);
    let h_rem = m
        .ctx
        .hold(1, "offline_pages", "start_isolate_page_range", 0);
    let h_arch = m.ctx.hold(1, "try_remove_memory", "arch_remove_memory", 0);
    let h_walk = hold_walker(&m);
    let rem = remover(&m, &dimm);
    assert!(
        m.ctx.wait_reached(h_rem, T),
        "remover never reached its hold"
    );
    let wal = walker(&m, &mm, a);
    assert!(
        m.ctx.wait_reached(h_walk, T),
        "walker never reached its hold"
    );
    m.ctx.release(h_rem);
    let mut state_at_removal = None;
    match waits {
        None if resume == Resume::BeforeRemoval => {
            assert!(
                m.ctx.wait_reached(h_arch, T),
                "remover never reached arch_remove_memory"
            );
            m.ctx.release(h_walk);
            let _ = wal.join().unwrap();
            m.ctx.release(h_arch);
            rem.join().unwrap().unwrap().unwrap();
        }
        None => {
            assert!(
                m.ctx.wait_reached(h_arch, T),
                "remover never reached arch_remove_memory"
            );
            state_at_removal = Some(m.mem_hotplug_lock.rss.state());
            m.ctx.release(h_arch);
            rem.join().unwrap().unwrap().unwrap();
            m.ctx.release(h_walk);
            let _ = wal.join().unwrap();
        }
        Some(func) => {
            assert!(
                m.ctx.wait_until_waiting(1, func, T),
                "remover does not wait in {func}"
            );
            m.ctx.release(h_walk);
            let w = wal.join().unwrap();
            if m.detect.count() == 0 {
                assert_eq!(
                    w,
                    Ok(Ok(1)),
                    "GUP falls back to the slow path and pins the migrated page"
                );
            }
            m.ctx.release(h_arch);
            rem.join().unwrap().unwrap().unwrap();
        }
    }
    (m.detect.violations(), state_at_removal)
}

fn debug_vm() -> KernelConfig {
    KernelConfig {
        debug_vm: true,
        ..Default::default()
    }
}

#[test]
fn the_open_sequence_on_broadcast_is_a_memmap_use_after_free() {
    // v6.18 defaults (no DEBUG_VM): no VM_WARN, the walker reads the freed
    // memmap in page_folio().
    let (v, state) = open_sequence(Arch::Broadcast, &[], None);
    assert_eq!(kinds(&v), vec![Kind::MemmapUseAfterFree], "{v:?}");
    let uaf = &v[0];
    assert_eq!(uaf.cpu, Some(0));
    assert_eq!(uaf.function, "try_get_folio");
    // No grace period ran at removal: the offline's mem_hotplug_done() left
    // rcu_sync in GP_EXIT, held there by the walker.
    assert_eq!(state, Some(GpState::Exit));
}

#[test]
fn with_debug_vm_the_walker_warns_then_reads_the_freed_memmap() {
    let (v, _) = open_sequence_with(
        Arch::Broadcast,
        &[],
        debug_vm(),
        0,
        Resume::AfterRemoval,
        None,
    );
    let k = kinds(&v);
    assert!(k.contains(&Kind::PfnNotValid), "{v:?}");
    assert!(k.contains(&Kind::MemmapUseAfterFree), "{v:?}");
    let uaf = v
        .iter()
        .find(|v| v.kind == Kind::MemmapUseAfterFree)
        .unwrap();
    let pnv = v.iter().find(|v| v.kind == Kind::PfnNotValid).unwrap();
    assert_eq!(pnv.function, "gup_fast_pte_range");
    assert_eq!(pnv.pfn, uaf.pfn);
}

#[test]
fn with_debug_vm_a_walker_resuming_before_removal_reads_a_poisoned_struct_page() {
    // offline_pages() ends with remove_pfn_range_from_zone(), which fills
    // the memmap with 0xff: the oops comes before any memmap is freed.
    let (v, _) = open_sequence_with(
        Arch::Broadcast,
        &[],
        debug_vm(),
        0,
        Resume::BeforeRemoval,
        None,
    );
    assert_eq!(kinds(&v), vec![Kind::PoisonedPageAccess], "{v:?}");
    assert_eq!(v[0].function, "try_get_folio");
    // Without DEBUG_VM the same schedule is harmless until the free: the
    // reference fails (refcount 0) or GUP falls back.
    let (v, _) = open_sequence_with(
        Arch::Broadcast,
        &[],
        KernelConfig::default(),
        0,
        Resume::BeforeRemoval,
        None,
    );
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn the_seed_fix_closes_it() {
    let (v, _) = open_sequence(
        Arch::Broadcast,
        &[(Sg::HOTPLUG_SYNCHRONIZE_RCU, true)],
        Some("synchronize_rcu"),
    );
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn the_try_remove_memory_placement_comes_after_debug_vm_poisoning() {
    // The grace period in try_remove_memory() waits for the walker, but the
    // memmap was already poisoned at the end of offline_pages().
    let (v, _) = open_sequence_with(
        Arch::Broadcast,
        &[(Sg::HOTPLUG_SYNCHRONIZE_RCU, true)],
        debug_vm(),
        0,
        Resume::AfterRemoval,
        Some("synchronize_rcu"),
    );
    assert_eq!(kinds(&v), vec![Kind::PoisonedPageAccess], "{v:?}");
}

#[test]
fn the_offline_pages_placement_closes_it_under_both_debug_vm_settings() {
    for cfg in [KernelConfig::default(), debug_vm()] {
        let (v, _) = open_sequence_with(
            Arch::Broadcast,
            &[(Sg::HOTPLUG_OFFLINE_SYNCHRONIZE_RCU, true)],
            cfg,
            0,
            Resume::AfterRemoval,
            Some("synchronize_rcu"),
        );
        assert!(v.is_empty(), "{cfg:?}: {v:?}");
    }
}

#[test]
fn page_ext_closes_it_when_enabled() {
    // A kernel with a page_ext user (page_owner, allocation profiling):
    // offline_page_ext() waits before the poisoning, so under both.
    for debug in [false, true] {
        let cfg = KernelConfig {
            page_ext: true,
            debug_vm: debug,
            ..Default::default()
        };
        let (v, _) = open_sequence_with(
            Arch::Broadcast,
            &[],
            cfg,
            0,
            Resume::AfterRemoval,
            Some("synchronize_rcu"),
        );
        assert!(v.is_empty(), "{cfg:?}: {v:?}");
    }
}

#[test]
fn the_memtier_grace_period_closes_it_when_the_block_empties_its_node() {
    // The DIMM is all of node 1's memory (a CPU-less CXL node): offlining
    // it sends NODE_REMOVED_LAST_MEMORY, and clear_node_memory_tier() waits.
    for cfg in [KernelConfig::default(), debug_vm()] {
        let (v, _) = open_sequence_with(
            Arch::Broadcast,
            &[],
            cfg,
            1,
            Resume::AfterRemoval,
            Some("synchronize_rcu"),
        );
        assert!(v.is_empty(), "{cfg:?}: {v:?}");
    }
    // Without that grace period the same node layout is open.
    let (v, _) = open_sequence_with(
        Arch::Broadcast,
        &[(Sg::MEMTIER_SYNCHRONIZE_RCU, false)],
        KernelConfig::default(),
        1,
        Resume::AfterRemoval,
        None,
    );
    assert_eq!(kinds(&v), vec![Kind::MemmapUseAfterFree], "{v:?}");
}

#[test]
fn offlining_a_node_migrates_its_pages_to_another_node() {
    let m = machine_with(Arch::Broadcast, &[], KernelConfig::default(), 1, 1, false);
    let (mm, a, dimm) = dimm_page(&m);
    let before = m.node(1).node_present_pages();
    assert_eq!(before, dimm.nr_pages);
    let c1 = m.cpu(1);
    c1.run(|| offline_and_remove_memory(&c1, dimm.start, dimm.nr_pages))
        .unwrap()
        .unwrap();
    assert!(!m.node(1).has_memory() && !m.node(1).has_memtier());
    assert!(m.node(0).has_memtier());
    let c0 = m.cpu(0);
    let mut pages = Vec::new();
    assert_eq!(
        c0.run(|| pin_user_pages_fast(&c0, &mm, a, 1, FOLL_WRITE, &mut pages)),
        Ok(Ok(1))
    );
    assert_eq!(m.pfn_to_nid(pages[0]), 0, "the page moved to node 0");
    c0.run(|| unpin_user_pages(&c0, &pages)).unwrap();
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn on_ipi_the_migration_flush_waits_for_the_walker() {
    // The batched flush of migrate_pages_batch() (try_to_unmap_flush())
    // IPIs the walker's CPU and waits until it enables IRQs: the walker
    // then finds the PTE changed.
    let (v, _) = open_sequence(Arch::Ipi, &[], Some("arch_tlbbatch_flush"));
    assert!(v.is_empty(), "{v:?}");
}

/// v6.18's synchronous migration first migrates its list as one
/// `MIGRATE_ASYNC` batch: every folio is unmapped with its TLB flush
/// deferred (`TTU_BATCH_FLUSH`), then one `try_to_unmap_flush()` covers
/// them all. So while the flush waits for a walker with IRQs off (`ipi`),
/// both pages of the block are already migration entries.
#[test]
fn migration_unmaps_the_whole_batch_before_one_flush() {
    use mmsim_model::mm::memory::{Mapped, lookup};
    let m = machine(Arch::Ipi, &[], 1, false);
    let (mm, a, dimm) = dimm_page(&m);
    let boot = m.boot_cpu();
    let b = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    access_user(&boot, &mm, b, Some(0xb)).unwrap();
    let in_dimm = |x| match lookup(&boot, &mm, x) {
        Mapped::Pte(e) => dimm.start <= e.pfn() && e.pfn() < dimm.end(),
        _ => false,
    };
    assert!(in_dimm(a) && in_dimm(b), "both pages in the DIMM");
    // The walker stalls after the offline's own grace periods (as in
    // open_sequence()), so that only the flush can wait for it.
    let h_rem = m
        .ctx
        .hold(1, "offline_pages", "start_isolate_page_range", 0);
    let h_walk = hold_walker(&m);
    let rem = remover(&m, &dimm);
    assert!(m.ctx.wait_reached(h_rem, T));
    let wal = walker(&m, &mm, a);
    assert!(m.ctx.wait_reached(h_walk, T));
    m.ctx.release(h_rem);
    assert!(
        m.ctx.wait_until_waiting(1, "arch_tlbbatch_flush", T),
        "the remover does not wait in the batched flush"
    );
    for x in [a, b] {
        match lookup(&boot, &mm, x) {
            Mapped::Pte(e) => assert!(e.is_migration(), "{x}: {e:?}"),
            other => panic!("{x}: {other:?}"),
        }
    }
    m.ctx.release(h_walk);
    let _ = wal.join().unwrap();
    rem.join().unwrap().unwrap().unwrap();
    assert_eq!(access_user(&boot, &mm, a, None), Ok(0x5eed));
    assert_eq!(access_user(&boot, &mm, b, None), Ok(0xb));
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// Two blocks, the page in the first: the second block's
/// lru_cache_disable() waits for the walker that stalled on the first.
fn two_blocks(sg: &[(Sg, bool)], waits: Option<&str>) -> Vec<Violation> {
    two_blocks_with(sg, KernelConfig::default(), waits)
}

fn two_blocks_with(sg: &[(Sg, bool)], cfg: KernelConfig, waits: Option<&str>) -> Vec<Violation> {
    let m = machine_with(Arch::Broadcast, sg, cfg, 2, 0, false);
    let (mm, a, dimm) = dimm_page(&m);
    let h_rem = m
        .ctx
        .hold(1, "offline_pages", "start_isolate_page_range", 0);
    let h_walk = hold_walker(&m);
    let rem = remover(&m, &dimm);
    assert!(m.ctx.wait_reached(h_rem, T));
    let wal = walker(&m, &mm, a);
    assert!(m.ctx.wait_reached(h_walk, T));
    m.ctx.release(h_rem);
    match waits {
        Some(func) => {
            assert!(
                m.ctx.wait_until_waiting(1, func, T),
                "remover does not wait in {func}"
            );
            m.ctx.release(h_walk);
            let w = wal.join().unwrap();
            if !cfg.debug_vm {
                assert_eq!(w, Ok(Ok(1)));
            }
            rem.join().unwrap().unwrap().unwrap();
        }
        None => {
            rem.join().unwrap().unwrap().unwrap();
            m.ctx.release(h_walk);
            let _ = wal.join().unwrap();
        }
    }
    m.detect.violations()
}

#[test]
fn with_debug_vm_the_last_block_no_longer_matters() {
    // The first block is poisoned at the end of its own offline_pages(),
    // before the second block's lru_cache_disable() lets the walker go.
    let v = two_blocks_with(&[], debug_vm(), Some("synchronize_rcu_expedited"));
    assert_eq!(kinds(&v), vec![Kind::PoisonedPageAccess], "{v:?}");
}

#[test]
fn the_last_block_matters() {
    let v = two_blocks(&[], Some("synchronize_rcu_expedited"));
    assert!(v.is_empty(), "{v:?}");
    let v = two_blocks(&[(Sg::LRU_DISABLE_SYNCHRONIZE_RCU, false)], None);
    assert!(kinds(&v).contains(&Kind::MemmapUseAfterFree), "{v:?}");
}

#[test]
fn order_matters_a_page_dropped_before_offlining_is_covered() {
    let m = machine(Arch::Broadcast, &[], 1, false);
    let (mm, a, dimm) = dimm_page(&m);
    let h_walk = hold_walker(&m);
    let wal = walker(&m, &mm, a);
    assert!(m.ctx.wait_reached(h_walk, T));
    // MADV_DONTNEED frees the page (broadcast: no wait for the walker).
    let c2 = m.cpu(2);
    madvise_dontneed(&c2, &mm, a, PAGE_SIZE).unwrap();
    let rem = remover(&m, &dimm);
    // mem_hotplug_begin() finds rcu_sync idle and waits for a grace period.
    assert!(m.ctx.wait_until_waiting(1, "synchronize_rcu", T));
    m.ctx.release(h_walk);
    assert_eq!(wal.join().unwrap(), Ok(Ok(1)));
    rem.join().unwrap().unwrap().unwrap();
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

/// Coherent device pages mapped by a process; the walker holds a PTE to one;
/// the other CPU unmaps it and runs memunmap_pages().
fn memunmap_sequence(sg: &[(Sg, bool)], waits: Option<&str>) -> (Vec<Violation>, Option<GpState>) {
    let m = machine(Arch::Broadcast, sg, 0, true);
    let boot = m.boot_cpu();
    let dax = m.range("dax").unwrap().clone();
    let pgmap = memremap_pages(&boot, dax.start, dax.nr_pages, PgmapType::Coherent).unwrap();
    let mm = mm_alloc(&boot).unwrap();
    for c in 0..3 {
        use_mm(&m.cpu(c), &mm);
    }
    let a = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: 4 * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Device(dax.start),
            thp: false,
        },
    )
    .unwrap();
    access_user(&boot, &mm, a, Some(1)).unwrap();
    let h_walk = hold_walker(&m);
    let wal = walker(&m, &mm, a);
    assert!(m.ctx.wait_reached(h_walk, T));
    let (cpu, mm1, pg) = (m.cpu(1), mm.clone(), pgmap.clone());
    let rem = std::thread::spawn(move || {
        let r = cpu.run(|| {
            do_munmap(&cpu, &mm1, a, 4 * PAGE_SIZE).unwrap();
            memunmap_pages(&cpu, &pg);
        });
        cpu.finish();
        r
    });
    let mut state = None;
    match waits {
        Some(func) => {
            assert!(
                m.ctx.wait_until_waiting(1, func, T),
                "remover does not wait in {func}"
            );
            state = Some(m.mem_hotplug_lock.rss.state());
            m.ctx.release(h_walk);
            let _ = wal.join().unwrap();
            rem.join().unwrap().unwrap();
        }
        None => {
            rem.join().unwrap().unwrap();
            m.ctx.release(h_walk);
            let _ = wal.join().unwrap();
        }
    }
    (m.detect.violations(), state)
}

#[test]
fn memunmap_upstream_the_kill_grace_period_waits() {
    let (v, _) = memunmap_sequence(&[], Some("memunmap_pages"));
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn memunmap_without_kill_rcu_rcu_sync_still_waits() {
    let (v, state) =
        memunmap_sequence(&[(Sg::PERCPU_REF_KILL_RCU, false)], Some("synchronize_rcu"));
    assert!(v.is_empty(), "{v:?}");
    // pageunmap_range()'s mem_hotplug_begin() found rcu_sync idle.
    assert_eq!(state, Some(GpState::Enter));
}

#[test]
fn memunmap_without_both_is_a_use_after_free_and_the_fix_closes_it() {
    let off = [
        (Sg::PERCPU_REF_KILL_RCU, false),
        (Sg::MEM_HOTPLUG_LOCK_RCU_SYNC, false),
    ];
    // The remover frees the memmap, then waits in pgmap_array_delete()'s
    // synchronize_rcu() — too late.
    let (v, _) = memunmap_sequence(&off, Some("synchronize_rcu"));
    assert!(kinds(&v).contains(&Kind::MemmapUseAfterFree), "{v:?}");
    let fixed = [off[0], off[1], (Sg::MEMREMAP_SYNCHRONIZE_RCU, true)];
    let (v, _) = memunmap_sequence(&fixed, Some("synchronize_rcu"));
    assert!(v.is_empty(), "{v:?}");
}

/// A finding about v6.18, not a model bug: device-dax (generic) page
/// references do not hold `pgmap->ref`, and neither `kill_dev_dax()`
/// (`unmap_mapping_range()`) nor `memunmap_pages()` waits for them. A
/// `FOLL_LONGTERM` pin taken before teardown and dropped after it touches a
/// freed memmap — with every safeguard on.
#[test]
fn devdax_long_term_pin_outlives_memunmap() {
    // Every safeguard on, the seed's fixes and page_ext included.
    let sg = [
        (Sg::HOTPLUG_SYNCHRONIZE_RCU, true),
        (Sg::HOTPLUG_OFFLINE_SYNCHRONIZE_RCU, true),
        (Sg::MEMREMAP_SYNCHRONIZE_RCU, true),
        (Sg::PAGE_EXT_OFFLINE_SYNCHRONIZE_RCU, true),
    ];
    let m = machine(Arch::Ipi, &sg, 0, true);
    let boot = m.boot_cpu();
    let dax = m.range("dax").unwrap().clone();
    let pgmap = memremap_pages(&boot, dax.start, dax.nr_pages, PgmapType::Generic).unwrap();
    let mm = mm_alloc(&boot).unwrap();
    let (c0, c1) = (m.cpu(0), m.cpu(1));
    use_mm(&c0, &mm);
    let a = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Device(dax.start),
            thp: false,
        },
    )
    .unwrap();
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages_fast(&c0, &mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, &mut pages),
        Ok(1)
    );
    assert_eq!(pages[0], dax.start);
    // The driver tears the device down: zap user mappings, memunmap_pages().
    c1.run(|| {
        kill_dev_dax(&c1, &pgmap);
        memunmap_pages(&c1, &pgmap);
    })
    .unwrap();
    assert!(m.detect.violations().is_empty());
    // The application drops its pin afterwards.
    assert_eq!(c0.run(|| unpin_user_pages(&c0, &pages)), Err(Died::Oops));
    let v = m.detect.violations();
    assert_eq!(kinds(&v), vec![Kind::MemmapUseAfterFree], "{v:?}");
    assert_eq!(v[0].pfn, Some(dax.start));
    assert_eq!(v[0].function, "unpin_user_page");
}

#[test]
fn offlining_a_pinned_page_retries_then_fails_and_a_short_pin_is_waited_for() {
    let m = machine(Arch::Broadcast, &[], 1, false);
    let (mm, a, dimm) = dimm_page(&m);
    let c0 = m.cpu(0);
    let mut pages = Vec::new();
    assert_eq!(
        pin_user_pages(&c0, &mm, a, 1, FOLL_WRITE, &mut pages),
        Ok(1)
    );
    let c1 = m.cpu(1);
    // Pinned for good: offlining retries and gives up as a signal would.
    assert_eq!(
        c1.run(|| offline_and_remove_memory(&c1, dimm.start, dimm.nr_pages)),
        Ok(Err(mmsim_model::Errno::EINTR))
    );
    // The block is online again and the page still there.
    assert_eq!(access_user(&c1, &mm, a, None), Ok(0x5eed));
    // A short pin: dropped while offlining retries.
    let p2 = pages.clone();
    let m2 = m.clone();
    let unpinner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        let c2 = m2.cpu(2);
        unpin_user_pages(&c2, &p2);
    });
    assert_eq!(
        c1.run(|| offline_and_remove_memory(&c1, dimm.start, dimm.nr_pages)),
        Ok(Ok(()))
    );
    unpinner.join().unwrap();
    // The data moved with the page.
    assert_eq!(access_user(&c1, &mm, a, None), Ok(0x5eed));
    let moved = match mmsim_model::mm::memory::lookup(&c1, &mm, a) {
        mmsim_model::mm::memory::Mapped::Pte(e) => e.pfn(),
        other => panic!("{other:?}"),
    };
    assert!(moved < dimm.start, "migrated to boot memory");
    exit_mmap(&c1, &mm);
    drop((c0, c1));
    assert_eq!(m.check_leaks(), 0);
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
}

#[test]
fn rcu_sync_transitions() {
    use mmsim_model::kernel::rcu_sync::{RcuSync, rcu_sync_enter, rcu_sync_exit};
    use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_barrier};
    let m = machine(Arch::Ipi, &[], 0, false);
    fn rss(cpu: &mmsim_model::Cpu) -> &RcuSync {
        &cpu.m.mem_hotplug_lock.rss
    }
    let c1 = m.cpu(1);
    let r = rss(&c1);
    assert_eq!(r.state(), GpState::Idle);
    rcu_sync_enter(&c1, r, rss);
    assert_eq!(r.state(), GpState::Passed);
    rcu_sync_exit(&c1, r, rss);
    assert_eq!(r.state(), GpState::Exit);
    // With no reader anywhere the callback is due at the next scheduling
    // point, so the next writer finds GP_IDLE again and takes its own grace
    // period.
    rcu_sync_enter(&c1, r, rss);
    assert_eq!(r.state(), GpState::Passed);
    rcu_sync_exit(&c1, r, rss);
    assert_eq!(r.state(), GpState::Exit);
    rcu_barrier(&c1);
    assert_eq!(r.state(), GpState::Idle);
    // A reader stalled with IRQs off holds GP_EXIT: the next writer finds
    // it and gets no grace period.
    rcu_sync_enter(&c1, r, rss);
    assert_eq!(r.state(), GpState::Passed);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (tx2, rx2) = std::sync::mpsc::channel::<()>();
    let c0 = m.cpu(0);
    let h = std::thread::spawn(move || {
        let _irq = local_irq_save(&c0);
        tx.send(()).unwrap();
        rx2.recv().unwrap();
    });
    rx.recv().unwrap();
    rcu_sync_exit(&c1, r, rss);
    assert_eq!(r.state(), GpState::Exit);
    for _ in 0..100 {
        mmsim_model::kernel::rcupdate::rcu_core(&c1);
    }
    assert_eq!(
        r.state(),
        GpState::Exit,
        "the callback waits for the reader"
    );
    rcu_sync_enter(&c1, r, rss); // returns at once: GP_EXIT >= GP_PASSED
    assert_eq!(r.state(), GpState::Exit);
    rcu_sync_exit(&c1, r, rss);
    assert_eq!(r.state(), GpState::Replay);
    tx2.send(()).unwrap();
    h.join().unwrap();
    rcu_barrier(&c1);
    assert_eq!(r.state(), GpState::Idle);
}

#[test]
fn percpu_ref_releases_only_after_a_grace_period_after_kill() {
    use mmsim_model::kernel::rcupdate::{local_irq_save, rcu_barrier};
    let m = machine(Arch::Ipi, &[], 0, true);
    let boot = m.boot_cpu();
    let dax = m.range("dax").unwrap().clone();
    let pgmap = memremap_pages(&boot, dax.start, dax.nr_pages, PgmapType::Coherent).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (tx2, rx2) = std::sync::mpsc::channel::<()>();
    let c0 = m.cpu(0);
    let h = std::thread::spawn(move || {
        let _irq = local_irq_save(&c0);
        tx.send(()).unwrap();
        rx2.recv().unwrap();
    });
    rx.recv().unwrap();
    let c1 = m.cpu(1);
    mmsim_model::kernel::percpu_ref::percpu_ref_kill(&c1, &pgmap, |p| &p.r#ref, |_, _| {});
    // Count zero, but still in per-CPU mode: no release while the reader
    // that began before the kill is inside.
    assert_eq!(pgmap.r#ref.count(), 0);
    mmsim_model::kernel::rcupdate::rcu_core(&c1);
    assert!(!pgmap.r#ref.released());
    assert!(!pgmap.r#ref.is_atomic());
    tx2.send(()).unwrap();
    h.join().unwrap();
    rcu_barrier(&c1);
    assert!(pgmap.r#ref.is_atomic());
    assert!(pgmap.r#ref.released());
}

/// CPUs pinning and unpinning in a hot-plugged range while another CPU
/// offlines, removes, re-adds and onlines it, with the seed's fix on: no
/// violation, no leak.
#[test]
fn hotplug_churn_with_the_fix_is_clean() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = machine(
        Arch::Broadcast,
        &[(Sg::HOTPLUG_SYNCHRONIZE_RCU, true)],
        2,
        false,
    );
    let (mm, _, dimm) = dimm_page(&m);
    let boot = m.boot_cpu();
    let base = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: 32 * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for c in 0..2u32 {
        let (cpu, mm, stop) = (m.cpu(c), mm.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = VirtAddr::new(base.as_u64() + (i % 32) * PAGE_SIZE);
                cpu.run(|| {
                    let _ = access_user(&cpu, &mm, a, Some(i));
                    let mut pages = Vec::new();
                    if pin_user_pages_fast(&cpu, &mm, a, 1, FOLL_WRITE, &mut pages).is_ok() {
                        unpin_user_pages(&cpu, &pages);
                    }
                })
                .unwrap();
                i += 1 + c as u64;
            }
            cpu.finish();
        }));
    }
    let cpu = m.cpu(2);
    let mut removed = 0;
    for _ in 0..200 {
        let r = cpu
            .run(|| offline_and_remove_memory(&cpu, dimm.start, dimm.nr_pages))
            .unwrap();
        if r.is_ok() {
            removed += 1;
            cpu.run(|| {
                add_memory(&cpu, dimm.start, dimm.nr_pages).unwrap();
                let mut b = dimm.start;
                while b < dimm.end() {
                    memory_block_online(&cpu, b, ZoneType::Movable).unwrap();
                    b = b.add(m.block_pages());
                }
            })
            .unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    assert!(removed > 0, "no removal succeeded");
    exit_mmap(&cpu, &mm);
    drop((cpu, boot));
    assert!(
        m.detect.violations().is_empty(),
        "{:?}",
        m.detect.violations()
    );
    assert_eq!(m.check_leaks(), 0);
}
