//! The machine: one booted kernel and its CPUs.
//!
//! A [`Machine`] owns every global of the model kernel (RCU, the sections,
//! the zones, the detector, the safeguard switches) and hands out [`Cpu`]s.
//! Physical memory is a list of named ranges laid out from pfn 0 in order,
//! each a whole number of sections: boot memory is online in `ZONE_NORMAL`
//! when the machine starts; hot-pluggable and device ranges start absent and
//! are added by the hotplug and `memremap` code.

use crate::config::KernelConfig;
use crate::detect::{Detector, Kind, Violation, install_panic_filter};
use crate::kernel::cpu::Cpu;
use crate::kernel::rcupdate::{Rcu, rcu_barrier};
use crate::mm::memory_hotplug::memmap_init_range;
use crate::mm::mm_types::{PageRef, pgty};
use crate::mm::mmzone::{MAX_NUMNODES, PglistData, Zone, ZoneType};
use crate::mm::page_alloc::{free_blocks, free_range_core};
use crate::mm::pgtable::PtStore;
use crate::mm::sparse::{Sparse, online_mem_sections, sparse_init_early_section};
use crate::safeguards::Safeguards;
use crate::types::{MAX_PAGE_ORDER, PAGE_SHIFT, Pfn};
// The machine handle is not a protocol step: std's Arc in every mode (a
// `self: &Arc<Self>` receiver must be std's, also under loom).
use crate::kernel::percpu_rwsem::PercpuRwSem;
use crate::mm::memremap::DevPagemap;
use crate::mm::mmap::MmStruct;
use mmsim_facade::RawLock;
use mmsim_facade::sched::{Ctx, Mode, Sched};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How TLB flushes reach other CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86 on bare metal: a flush IPIs every CPU of the mm and waits for each
    /// to handle it, which a CPU with IRQs off does only when it enables them.
    Ipi,
    /// arm64's TLBI, x86's INVLPGB, a paravirt flush under a hypervisor: the
    /// flush does not wait for CPUs with IRQs off.
    Broadcast,
}

impl Arch {
    /// The scenario-file name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Ipi => "ipi",
            Arch::Broadcast => "broadcast",
        }
    }

    /// The architecture with that name.
    pub fn from_name(s: &str) -> Option<Arch> {
        match s {
            "ipi" => Some(Arch::Ipi),
            "broadcast" => Some(Arch::Broadcast),
            _ => None,
        }
    }
}

/// What a physical range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeKind {
    /// Boot memory: online in `ZONE_NORMAL` from the start.
    Boot,
    /// A hot-pluggable DIMM.
    Hotplug,
    /// Device memory for `memremap_pages()`.
    Device,
}

/// A physical range as configured.
#[derive(Clone, Debug)]
pub struct RangeConfig {
    /// Its name (scenario files refer to it).
    pub name: String,
    /// What it is.
    pub kind: RangeKind,
    /// Its size in bytes, a whole number of sections.
    pub bytes: u64,
    /// Its NUMA node (0 without `CONFIG_NUMA`).
    pub node: u32,
}

/// A physical range as laid out.
#[derive(Clone, Debug)]
pub struct MemRange {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: RangeKind,
    /// Its first pfn.
    pub start: Pfn,
    /// Its length in pages.
    pub nr_pages: u64,
    /// Its NUMA node.
    pub node: u32,
}

impl MemRange {
    /// One past its last pfn.
    pub fn end(&self) -> Pfn {
        self.start.add(self.nr_pages)
    }
}

/// How to build a machine.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Model CPUs (a boot CPU is added for set-up and teardown).
    pub nr_cpus: u32,
    /// `SECTION_SIZE_BITS`, 16 (64 KiB) to 27 (128 MiB).
    pub section_shift: u32,
    /// Physical memory, in layout order.
    pub ranges: Vec<RangeConfig>,
    /// TLB flush flavour.
    pub arch: Arch,
    /// Safeguard switches.
    pub safeguards: Safeguards,
    /// The kernel configuration.
    pub config: KernelConfig,
    /// How CPUs are scheduled.
    pub mode: Mode,
    /// Whether tests may hold CPUs at points.
    pub hooks: bool,
    /// Whether to record a trace natively.
    pub tracing: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            nr_cpus: 2,
            section_shift: 27,
            ranges: vec![RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 128 << 20,
                node: 0,
            }],
            arch: Arch::Ipi,
            safeguards: Safeguards::default(),
            config: KernelConfig::default(),
            mode: Mode::Native,
            hooks: false,
            tracing: false,
        }
    }
}

/// The model kernel's globals.
pub struct Machine {
    /// The configuration it was built from.
    pub cfg: MachineConfig,
    /// Safeguard switches (fixed for the machine's life).
    pub sg: Safeguards,
    /// The kernel configuration (fixed for the machine's life).
    pub config: KernelConfig,
    /// TLB flush flavour.
    pub arch: Arch,
    /// Scheduling context shared by the CPUs.
    pub ctx: std::sync::Arc<Ctx>,
    /// RCU.
    pub rcu: Rcu,
    /// The sections and memmap.
    pub sparse: Sparse,
    /// `NODE_DATA(nid)` for each node.
    nodes: Box<[PglistData]>,
    /// The oracle.
    pub detect: Detector,
    /// Physical memory layout.
    pub ranges: Vec<MemRange>,
    max_order: u32,
    pageblock_order: u32,
    /// Page-table contents, by table page.
    pub pt: PtStore,
    zero_pfn: std::sync::OnceLock<Pfn>,
    next_id: mmsim_facade::AtomicU64,
    /// `mem_hotplug_lock`.
    pub mem_hotplug_lock: PercpuRwSem,
    /// `device_hotplug_lock` (`lock_device_hotplug()`): serialises memory
    /// block state changes, as the sysfs device core does.
    pub device_hotplug_lock: mmsim_facade::Mutex<()>,
    /// `lru_disable_count`.
    pub lru_disable_count: mmsim_facade::AtomicU32,
    /// Memory blocks (`/sys/devices/system/memory/memoryN`), by first pfn.
    pub blocks: RawLock<BTreeMap<u64, BlockState>>,
    /// `pgmap_array`: the live `dev_pagemap`s.
    pub pgmaps: RawLock<Vec<Arc<DevPagemap>>>,
    /// Every address space, for the reverse map (migration, driver zaps).
    pub mms: RawLock<Vec<std::sync::Weak<MmStruct>>>,
    /// The deferred split queue (`struct deferred_split`), owned by
    /// [`crate::mm::huge_memory`].
    pub deferred_split: crate::mm::huge_memory::DeferredSplit,
    /// Every file's page cache ([`crate::mm::filemap`]), for
    /// `folio->mapping` lookups; files live as long as the machine.
    pub address_spaces: RawLock<Vec<Arc<crate::mm::filemap::AddressSpace>>>,
    /// HugeTLB vmemmap optimization's state (its static key), owned by
    /// [`crate::mm::hugetlb_vmemmap`].
    pub hvo: crate::mm::hugetlb_vmemmap::HugetlbVmemmap,
    /// KSM's state (ksmd's mutex, the stable tree), owned by
    /// [`crate::mm::ksm`].
    pub ksm: crate::mm::ksm::Ksm,
}

/// The state of a memory block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Added, not online.
    Offline,
    /// Online in a zone.
    Online(ZoneType),
}

fn mem_hotplug_lock_rss(cpu: &Cpu) -> &crate::kernel::rcu_sync::RcuSync {
    &cpu.m.mem_hotplug_lock.rss
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("ranges", &self.ranges)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Builds and boots a machine.
    pub fn new(cfg: MachineConfig) -> Result<Arc<Machine>, String> {
        install_panic_filter();
        mmsim_facade::membarrier::init();
        if !(16..=27).contains(&cfg.section_shift) {
            return Err(format!(
                "section size 2^{} is out of range (64K to 128M)",
                cfg.section_shift
            ));
        }
        if cfg.nr_cpus == 0 || cfg.nr_cpus > 64 {
            return Err(format!("{} CPUs: the model runs 1 to 64", cfg.nr_cpus));
        }
        let sec_bytes = 1u64 << cfg.section_shift;
        let mut ranges = Vec::new();
        let mut next = 0u64;
        let mut nr_nodes = 1;
        for r in &cfg.ranges {
            if r.node >= MAX_NUMNODES || (r.node > 0 && !cfg.config.numa) {
                return Err(format!(
                    "memory `{}`: node {} does not exist ({})",
                    r.name,
                    r.node,
                    if cfg.config.numa {
                        "the model has nodes 0 to 15"
                    } else {
                        "without numa there is only node 0"
                    }
                ));
            }
            nr_nodes = nr_nodes.max(r.node + 1);
            if r.bytes == 0 || r.bytes % sec_bytes != 0 {
                return Err(format!(
                    "memory `{}`: {} bytes is not a whole number of {} KiB sections",
                    r.name,
                    r.bytes,
                    sec_bytes >> 10
                ));
            }
            let nr_pages = r.bytes >> PAGE_SHIFT;
            ranges.push(MemRange {
                name: r.name.clone(),
                kind: r.kind,
                start: Pfn::try_new(next).ok_or("physical memory too large")?,
                nr_pages,
                node: r.node,
            });
            next = next
                .checked_add(nr_pages)
                .filter(|&n| n <= Pfn::MAX)
                .ok_or("physical memory too large")?;
        }
        if !ranges.iter().any(|r| r.kind == RangeKind::Boot) {
            return Err("a machine needs some boot memory".into());
        }
        let nr_sections = (next >> (cfg.section_shift - PAGE_SHIFT)) as usize;
        let max_order = MAX_PAGE_ORDER.min(cfg.section_shift - PAGE_SHIFT);
        let pageblock_order = 9.min(cfg.section_shift - PAGE_SHIFT);
        let boot = ranges
            .iter()
            .find(|r| r.kind == RangeKind::Boot)
            .map(|r| (r.start, r.nr_pages))
            .ok_or("a machine needs some boot memory")?;
        if ranges.iter().filter(|r| r.kind == RangeKind::Boot).count() > 1 {
            return Err("one boot range at most".into());
        }
        let mut ctx = Ctx::new(cfg.mode, cfg.hooks);
        ctx.set_tracing(cfg.tracing);
        let m = Arc::new(Machine {
            sg: cfg.safeguards,
            config: cfg.config,
            arch: cfg.arch,
            ctx: std::sync::Arc::new(ctx),
            // The model CPUs, the rcuo kthread's, the boot CPU.
            rcu: Rcu::new(cfg.nr_cpus as usize + 2),
            sparse: Sparse::new(cfg.section_shift, nr_sections),
            nodes: (0..nr_nodes)
                .map(|n| PglistData::new(n, max_order))
                .collect(),
            detect: Detector::default(),
            ranges,
            max_order,
            pageblock_order,
            pt: PtStore::new(boot.0, boot.1),
            zero_pfn: std::sync::OnceLock::new(),
            next_id: mmsim_facade::AtomicU64::new(1),
            mem_hotplug_lock: PercpuRwSem::new(
                cfg.safeguards
                    .on(crate::safeguards::Sg::MEM_HOTPLUG_LOCK_RCU_SYNC),
                mem_hotplug_lock_rss,
            ),
            lru_disable_count: mmsim_facade::AtomicU32::new(0),
            device_hotplug_lock: mmsim_facade::Mutex::new(
                mmsim_facade::point!("lock_device_hotplug", "device_hotplug_lock"),
                (),
            ),
            blocks: RawLock::new(BTreeMap::new()),
            pgmaps: RawLock::new(Vec::new()),
            mms: RawLock::new(Vec::new()),
            deferred_split: Default::default(),
            address_spaces: RawLock::new(Vec::new()),
            hvo: Default::default(),
            ksm: Default::default(),
            cfg,
        });
        m.boot();
        Ok(m)
    }

    fn boot(self: &Arc<Self>) {
        let cpu = self.boot_cpu();
        for r in self.ranges.iter().filter(|r| r.kind == RangeKind::Boot) {
            let first = self.sparse.pfn_to_section_nr(r.start);
            let last = self
                .sparse
                .pfn_to_section_nr(r.end().checked_sub(1).unwrap_or(r.start));
            for nr in first..=last {
                sparse_init_early_section(&cpu, nr);
            }
            online_mem_sections(&cpu, r.start, r.end());
            // free_area_init(): the zone spans the boot memory.
            let zone = self.node(r.node).zone(ZoneType::Normal);
            crate::mm::memory_hotplug::resize_zone_range(zone, r.start, r.nr_pages);
            memmap_init_range(&cpu, r.start, r.nr_pages, r.node, ZoneType::Normal);
            free_range_core(&cpu, r.start, r.nr_pages);
            self.node(r.node).set_has_memory(true);
        }
        // page_alloc_init_late(): set_zone_contiguous() of every populated
        // zone.
        for n in self.nodes.iter() {
            for z in n.zones() {
                if z.populated() {
                    crate::mm::memory_hotplug::set_zone_contiguous(&cpu, z);
                }
            }
        }
        // memory_tier_late_init(): every node with memory at boot joins the
        // default DRAM tier.
        for n in self.nodes.iter() {
            if n.has_memory() {
                crate::mm::memory_tiers::set_node_memory_tier(&cpu, n.node_id);
            }
        }
        // The shared zero page: reserved, never freed.
        if let Some(z) =
            crate::mm::page_alloc::alloc_pages(&cpu, crate::mm::page_alloc::Gfp::ZERO, 0)
        {
            z.set_flags(&cpu, crate::mm::mm_types::pg::RESERVED);
            let _ = self.zero_pfn.set(z.pfn());
        }
        rcu_barrier(&cpu);
    }

    /// `my_zero_pfn()`: the shared zero page.
    pub fn zero_pfn(&self) -> Pfn {
        self.zero_pfn.get().copied().unwrap_or(Pfn::new(Pfn::MAX))
    }

    /// A fresh id for an mm or a shared object.
    pub fn next_mm_id(&self) -> u64 {
        self.next_id.fetch_add(1, mmsim_facade::Ordering::Relaxed)
    }

    /// Model CPU `id` (0-based, below `nr_cpus`).
    pub fn cpu(self: &Arc<Self>, id: u32) -> Cpu {
        assert!(id < self.cfg.nr_cpus, "cpu{id} does not exist");
        Cpu::new(id, self.clone(), Sched::new(id, self.ctx.clone()))
    }

    /// The CPU of the `rcuo` kthread an explorer runs beside the model CPUs
    /// (number `nr_cpus`, the CPU after the last model CPU, as its shuttle
    /// task comes after theirs); see [`crate::kernel::rcupdate::rcuo_kthread`].
    /// Callbacks are left to it from now on.
    pub fn rcuo_cpu(self: &Arc<Self>) -> Cpu {
        self.rcu.defer_callbacks();
        let id = self.cfg.nr_cpus;
        Cpu::new_rcuo(id, self.clone(), Sched::new(id, self.ctx.clone()))
    }

    /// The boot CPU (number `nr_cpus + 1`): runs set-up and teardown, outside any exploration (it
    /// is never preempted and never traced).
    pub fn boot_cpu(self: &Arc<Self>) -> Cpu {
        let quiet = std::sync::Arc::new(Ctx::new(Mode::Native, false));
        Cpu::new(
            self.cfg.nr_cpus + 1,
            self.clone(),
            Sched::new(self.cfg.nr_cpus + 1, quiet),
        )
    }

    /// The buddy allocator's largest order on this machine (a block never
    /// spans sections).
    pub fn max_order(&self) -> u32 {
        self.max_order
    }

    /// `pageblock_order`.
    pub fn pageblock_order(&self) -> u32 {
        self.pageblock_order
    }

    /// A zone of node 0 (the only node of a machine without NUMA ranges).
    pub fn zone(&self, z: ZoneType) -> &Zone {
        self.nodes[0].zone(z)
    }

    /// `NODE_DATA(nid)`; node ids beyond the machine's are clamped to its
    /// last node (page flags never hold one).
    pub fn node(&self, nid: u32) -> &PglistData {
        &self.nodes[(nid as usize).min(self.nodes.len() - 1)]
    }

    /// The number of nodes (`nr_node_ids`).
    pub fn nr_nodes(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The node of the physical range that holds `pfn` (what the firmware's
    /// memory affinity table says), 0 outside every range.
    pub fn pfn_to_nid(&self, pfn: Pfn) -> u32 {
        self.ranges
            .iter()
            .find(|r| r.start <= pfn && pfn < r.end())
            .map_or(0, |r| r.node)
    }

    /// `page_zone()`.
    pub fn zone_of(&self, cpu: &Cpu, page: PageRef<'_>) -> &Zone {
        let c = page.checked(cpu);
        let z = c.zonenum().min(2);
        let nid = ((c.flags() & crate::mm::mm_types::pg::NODE_MASK)
            >> crate::mm::mm_types::pg::NODE_SHIFT) as u32;
        &self.node(nid).zones()[z]
    }

    /// `memory_block_size_bytes()` in pages: one section.
    pub fn block_pages(&self) -> u64 {
        self.sparse.pages_per_section()
    }

    /// The live mms.
    pub fn all_mms(&self) -> Vec<Arc<MmStruct>> {
        let mut l = self.mms.lock();
        l.retain(|w| w.strong_count() > 0);
        l.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// The mm with `id`, if it still lives.
    pub fn mm_by_id(&self, id: u64) -> Option<Arc<MmStruct>> {
        self.mms
            .lock()
            .iter()
            .filter_map(|w| w.upgrade())
            .find(|m| m.id == id)
    }

    /// The file whose address space has `id` (`folio->mapping >> 1`).
    pub fn address_space(&self, id: u64) -> Option<Arc<crate::mm::filemap::AddressSpace>> {
        self.address_spaces
            .lock()
            .iter()
            .find(|a| a.id == id)
            .cloned()
    }

    /// `folio->pgmap`: the pgmap whose id a ZONE_DEVICE page keeps in
    /// `private`, if it still lives.
    pub fn pgmap_by_id(&self, id: u64) -> Option<Arc<DevPagemap>> {
        self.pgmaps.lock().iter().find(|p| p.id == id).cloned()
    }

    /// `get_dev_pagemap()` without the reference: the pgmap covering `pfn`.
    pub fn pgmap_of(&self, pfn: Pfn) -> Option<Arc<DevPagemap>> {
        self.pgmaps
            .lock()
            .iter()
            .find(|p| p.start <= pfn && pfn < p.start.add(p.nr_pages))
            .cloned()
    }

    /// The range named `name`.
    pub fn range(&self, name: &str) -> Option<&MemRange> {
        self.ranges.iter().find(|r| r.name == name)
    }

    /// Teardown check: every page of every zone is back in the allocator,
    /// or offline. Reports a `leak` for each page that is not (the first
    /// eight) and returns how many pages leaked.
    ///
    /// The allocator's own counts answer first, in time proportional to
    /// the number of zones, not pages: when every page the buddy allocator
    /// manages is free again but the zero page, nothing leaked (every page
    /// the walk below could report is a page some zone manages: boot memory
    /// and onlined memory are handed to the allocator whole, and what
    /// offlining takes out it takes out of the count too). Only when the
    /// counts disagree does the walk over every pfn name the pages.
    pub fn check_leaks(self: &Arc<Self>) -> u64 {
        let cpu = self.boot_cpu();
        rcu_barrier(&cpu);
        if self.allocator_whole(&cpu) {
            return 0;
        }
        self.leak_walk(&cpu)
    }

    /// [`Machine::check_leaks`] with the walk over every pfn run whatever
    /// the counts say, for the tests: a walk that finds a leak the counts
    /// missed is a defect of the model (a page outside every zone's count)
    /// and panics.
    pub fn check_leaks_cross_checked(self: &Arc<Self>) -> u64 {
        let cpu = self.boot_cpu();
        rcu_barrier(&cpu);
        let whole = self.allocator_whole(&cpu);
        let leaked = self.leak_walk(&cpu);
        assert!(
            !whole || leaked == 0,
            "check_leaks: the allocator's counts say no page leaked, the walk found {leaked}"
        );
        leaked
    }

    /// Whether every page the zones manage is free, but the zero page:
    /// `zone_managed_pages()` against the free lists' count, zone by zone.
    /// The zero page is counted as held only while it is (not back in the
    /// allocator, referenced): one freed by a reference imbalance would
    /// otherwise hide one leaked page.
    fn allocator_whole(&self, cpu: &Cpu) -> bool {
        let mut held = 0u64;
        for z in self.nodes.iter().flat_map(|n| n.zones().iter()) {
            match z.managed_pages().checked_sub(z.free_pages()) {
                Some(h) => held += h,
                // More free than managed: the counts cannot be trusted.
                None => return false,
            }
        }
        let zero_held = self.zero_pfn.get().is_some_and(|&z| {
            let p = self.sparse.pfn_to_page(z);
            p.page_type(cpu) != pgty::BUDDY && p.ref_count(cpu) > 0
        });
        held == u64::from(zero_held)
    }

    /// The leak check's walk over every pfn (see [`Machine::check_leaks`]).
    fn leak_walk(&self, cpu: &Cpu) -> u64 {
        let mut leaked = 0;
        let max_pfn = self
            .ranges
            .iter()
            .map(|r| r.end().as_u64())
            .max()
            .unwrap_or(0);
        // Each zone's free pages, one bit per pfn (the walk asks for each),
        // so that the walk is one pass over the pfns, each checked against
        // the zone its page says it is in: a pass per zone took three times
        // as long on every machine.
        let zones: Vec<&Zone> = self.nodes.iter().flat_map(|n| n.zones().iter()).collect();
        let words = max_pfn.div_ceil(64) as usize;
        let mut free = vec![0u64; words * zones.len()];
        for (zi, z) in zones.iter().enumerate() {
            let bits = &mut free[zi * words..(zi + 1) * words];
            for (p, o) in free_blocks(z) {
                for i in p..(p + (1u64 << o)).min(max_pfn) {
                    bits[(i / 64) as usize] |= 1 << (i % 64);
                }
            }
        }
        let is_free =
            |zi: usize, pfn: u64| free[zi * words + (pfn / 64) as usize] & (1 << (pfn % 64)) != 0;
        for r in &self.ranges {
            for pfn in r.start.as_u64()..r.end().as_u64() {
                let page = self.sparse.pfn_to_page(Pfn::new(pfn));
                if !page.is_live() || pfn == self.zero_pfn().as_u64() {
                    continue;
                }
                let (zt, nid) = (page.zonenum(cpu), page.nid(cpu));
                let Some(zi) = zones
                    .iter()
                    .position(|z| z.zone_type as usize == zt && z.node == nid)
                else {
                    continue;
                };
                if page.page_type(cpu) == pgty::OFFLINE || is_free(zi, pfn) {
                    continue;
                }
                let ms = self.sparse.pfn_to_section(Pfn::new(pfn));
                if !ms.is_some_and(|m| m.online()) || zones[zi].zone_type == ZoneType::Device {
                    continue;
                }
                if leaked < 8 {
                    self.detect.record(Violation {
                        kind: Kind::Leak,
                        cpu: None,
                        function: "check_leaks",
                        step: "page not returned to the allocator",
                        pfn: Some(Pfn::new(pfn)),
                        detail: format!(
                            "refcount {}, mapcount {}",
                            page.ref_count(cpu),
                            page.mapcount(cpu)
                        ),
                    });
                }
                leaked += 1;
            }
        }
        leaked
    }
}
