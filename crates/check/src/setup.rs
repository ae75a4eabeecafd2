//! From a [`Scenario`] to a booted machine in its start state.
//!
//! A [`Plan`] is built once per check: the scenario with the command line's
//! overrides applied and the [`MachineConfig`] to boot. [`Plan::boot`] is
//! called once per explored execution (the machine must be fresh every
//! time): it boots the machine, brings memory ranges to their start state,
//! creates every process with its initial VMAs (populated where asked, with
//! pages from the named memory), and runs to quiescence (`rcu_barrier()`),
//! all on the boot CPU, which is never preempted and never traced.
//!
//! Placing pages in a named memory range (`memory`, `block`) uses only the
//! allocator's public interface: before the VMA is populated, every free
//! block that an allocation for it could take from outside the target range
//! is allocated and held, and freed again afterwards. The buddy allocator
//! hands out the lowest free pfn first, so the VMA gets the first free pages
//! of the target. `ZONE_NORMAL` outside the target is held only when the
//! target is itself in `ZONE_NORMAL` (page tables must come from somewhere).

use crate::scenario::{Backing, Loc, MemKind, MemState, Prot, Scenario, VmaId};
use mmsim_facade::sched::Mode;
use mmsim_facade::{AtomicU64, Ordering, RawLock};
use mmsim_model::kernel::rcupdate::rcu_barrier;
use mmsim_model::mm::filemap::{AddressSpace, filemap_create_folio};
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::memory_hotplug::{add_memory, online_memory_block};
use mmsim_model::mm::memremap::{PgmapType, memremap_pages};
use mmsim_model::mm::mm_types::PageRef;
use mmsim_model::mm::mmap::{self, BackingKind, MmStruct, MmapArgs, do_mmap, mm_alloc, use_mm};
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::page_alloc::{__free_pages, Gfp, alloc_pages};
use mmsim_model::mm::page_ref::folio_put;
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::{PAGE_SHIFT, PAGE_SIZE};
use mmsim_model::{
    Arch, Cpu, KernelConfig, Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr,
};
use std::fmt;
use std::sync::Arc;

/// The command line's changes to a scenario's own settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--arch`.
    pub arch: Option<Arch>,
    /// `--config NAME=on|off`, in order.
    pub config: Vec<(String, bool)>,
    /// `--safeguard NAME=on|off`, in order.
    pub safeguards: Vec<(String, bool)>,
}

/// Set-up could not build the scenario's start state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError {
    /// The scenario's file.
    pub file: String,
    /// The entry that failed, if one did.
    pub loc: Option<Loc>,
    /// What failed.
    pub message: String,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.loc {
            Some(l) => write!(f, "{}:{}:{}: {}", self.file, l.line, l.column, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for SetupError {}

/// A scenario ready to boot, many times.
#[derive(Debug)]
pub struct Plan {
    /// The scenario as the file says it.
    pub scenario: Scenario,
    /// The architecture this run uses.
    pub arch: Arch,
    /// The safeguards this run uses.
    pub safeguards: Safeguards,
    /// The kernel configuration this run uses.
    pub config: KernelConfig,
    cfg: MachineConfig,
    /// Per process, per initial VMA: whether its pages must be placed.
    steer: Vec<Vec<bool>>,
    /// Per file: whether its cached pages must be placed.
    steer_files: Vec<bool>,
    /// Per CPU, per operation: its line in a timeline.
    pub descriptions: Vec<Vec<String>>,
}

/// Where a forked process's mm appears once its parent forks.
#[derive(Debug)]
pub enum Child {
    /// The fork has not happened yet.
    NotYet,
    /// The fork made this mm.
    Forked(Arc<MmStruct>),
    /// The fork will never happen (it failed, or its CPU ended without it).
    Never,
}

/// A forked process's slot (see [`Child`]); a CPU that runs the child
/// waits on it (its wait channel is the slot's address).
#[derive(Debug)]
pub struct ChildSlot(pub RawLock<Child>);

/// A booted machine in the scenario's start state.
pub struct World {
    /// The machine.
    pub m: Arc<Machine>,
    /// Each declared process's mm (forked processes come after them in the
    /// scenario's list and live in `children`).
    pub mms: Vec<Arc<MmStruct>>,
    /// Each forked process's mm once it exists, by its index in the
    /// scenario's processes minus `mms.len()`.
    pub children: Arc<Vec<ChildSlot>>,
    /// Each process's VMAs' start addresses (0: not mapped yet).
    pub vmas: Arc<Vec<Vec<AtomicU64>>>,
}

impl Plan {
    /// Applies `ov` to the scenario and boots it once (natively) so that a
    /// set-up error is reported before any exploration.
    pub fn new(scenario: Scenario, ov: &Overrides) -> Result<Plan, SetupError> {
        for c in &scenario.cpus {
            for op in &c.ops {
                if let Some(message) = crate::ops::unsupported(op) {
                    return Err(SetupError {
                        file: scenario.source.clone(),
                        loc: Some(op.loc),
                        message,
                    });
                }
            }
        }
        let (config, safeguards) =
            scenario
                .settings_with(&ov.config, &ov.safeguards)
                .map_err(|message| SetupError {
                    file: "--config/--safeguard".into(),
                    loc: None,
                    message,
                })?;
        let arch = ov.arch.unwrap_or(scenario.arch);
        let cfg = MachineConfig {
            nr_cpus: scenario.cpus.len() as u32,
            section_shift: scenario.section_shift,
            ranges: scenario
                .memory
                .iter()
                .map(|m| RangeConfig {
                    name: m.name.clone(),
                    kind: match m.kind {
                        MemKind::Boot => RangeKind::Boot,
                        MemKind::Hotplug => RangeKind::Hotplug,
                        MemKind::Device => RangeKind::Device,
                    },
                    bytes: m.bytes,
                    node: m.node,
                })
                .collect(),
            arch,
            safeguards,
            config,
            mode: Mode::Explore,
            hooks: false,
            tracing: false,
        };
        // Placing pages is needed where the allocator could hand out pages
        // from another range, or a block other than the first is asked for.
        let ranges_with_pages = scenario
            .memory
            .iter()
            .filter(|m| matches!(m.state, MemState::Boot | MemState::Online))
            .count();
        let steer = scenario
            .processes
            .iter()
            .map(|p| {
                p.vmas
                    .iter()
                    .map(|v| {
                        matches!(v.backing, Backing::Anon | Backing::Shared)
                            && v.populate
                            && v.memory.is_some()
                            && (ranges_with_pages > 1 || v.block.is_some_and(|b| b > 0))
                    })
                    .collect()
            })
            .collect();
        let steer_files = scenario
            .files
            .iter()
            .map(|f| {
                f.cached
                    && f.memory.is_some()
                    && (ranges_with_pages > 1 || f.block.is_some_and(|b| b > 0))
            })
            .collect();
        let descriptions = scenario
            .cpus
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.ops
                    .iter()
                    .map(|op| crate::ops::describe(&scenario, i, op))
                    .collect()
            })
            .collect();
        let plan = Plan {
            scenario,
            arch,
            safeguards,
            config,
            cfg,
            steer,
            steer_files,
            descriptions,
        };
        // A model panic during set-up (an oops outside any operation, say)
        // is a defect of the model or of this validation, not bad input:
        // it unwinds to the command line's one handler of internal errors.
        plan.boot(Mode::Native)?;
        Ok(plan)
    }

    fn err(&self, loc: Option<Loc>, message: impl Into<String>) -> SetupError {
        SetupError {
            file: self.scenario.source.clone(),
            loc,
            message: message.into(),
        }
    }

    /// The safeguards that differ from v6.18, as `name=on|off`.
    pub fn safeguard_overrides(&self) -> Vec<String> {
        self.safeguards.overrides()
    }

    /// Boots a fresh machine (in `mode`) and builds the start state.
    pub fn boot(&self, mode: Mode) -> Result<World, SetupError> {
        let mut cfg = self.cfg.clone();
        cfg.mode = mode;
        let m = Machine::new(cfg).map_err(|e| self.err(None, e))?;
        let boot = m.boot_cpu();
        for (i, mem) in self.scenario.memory.iter().enumerate() {
            let r = m.ranges[i].clone();
            let at = |e: mmsim_model::Errno| {
                self.err(Some(mem.loc), format!("memory `{}`: {e}", mem.name))
            };
            match mem.state {
                MemState::Boot | MemState::Absent => {}
                MemState::Offline => add_memory(&boot, r.start, r.nr_pages).map_err(at)?,
                MemState::Online => {
                    add_memory(&boot, r.start, r.nr_pages).map_err(at)?;
                    let zone = zone_type(mem.zone);
                    let mut b = r.start;
                    while b < r.end() {
                        online_memory_block(&boot, b, zone).map_err(at)?;
                        b = b.add(m.block_pages());
                    }
                }
                MemState::Mapped => {
                    memremap_pages(&boot, r.start, r.nr_pages, pgmap_type(mem.dev_type))
                        .map_err(at)?;
                }
            }
        }
        for (fi, f) in self.scenario.files.iter().enumerate() {
            let a = AddressSpace::new(&boot, &f.name, f.pages, f.shmem, |i| file_marker(fi, i));
            if !f.cached {
                continue;
            }
            let fill = || -> Result<(), mmsim_model::Errno> {
                for i in 0..f.pages {
                    let folio = filemap_create_folio(&boot, &a, i)?;
                    folio_put(&boot, folio);
                }
                Ok(())
            };
            let r = match f.memory {
                Some(mi) if self.steer_files[fi] => {
                    let (start, end) = self.block_pfns(&m, mi, f.block);
                    with_pages_from(&boot, start, end, fill)
                }
                _ => fill(),
            };
            r.map_err(|e| {
                self.err(
                    Some(f.loc),
                    format!("file `{}`: caching its pages: {e}", f.name),
                )
            })?;
            if let Some(mi) = f.memory {
                let (start, end) = self.block_pfns(&m, mi, f.block);
                if (0..f.pages).any(|i| a.peek(i).is_none_or(|p| p < start || p >= end)) {
                    return Err(self.err(
                        Some(f.loc),
                        format!(
                            "file `{}`: not every cached page could be placed in memory `{}`",
                            f.name, m.ranges[mi].name
                        ),
                    ));
                }
            }
        }
        let mut mms = Vec::new();
        let vmas: Vec<Vec<AtomicU64>> = self
            .scenario
            .processes
            .iter()
            .map(|p| p.vmas.iter().map(|_| AtomicU64::new(0)).collect())
            .collect();
        let world_vmas = Arc::new(vmas);
        for (pi, p) in self.scenario.processes.iter().enumerate() {
            if p.forked_from.is_some() {
                continue;
            }
            let mm = mm_alloc(&boot)
                .map_err(|e| self.err(None, format!("process `{}`: mm_alloc: {e}", p.name)))?;
            for vid in 0..p.initial {
                let spec = &p.vmas[vid];
                let place = self.steer[pi][vid];
                let r = if place {
                    let mi = spec.memory.unwrap_or(0);
                    let (start, end) = self.block_pfns(&m, mi, spec.block);
                    with_pages_from(&boot, start, end, || {
                        map_vma(&boot, &self.scenario, &mm, &world_vmas, pi, vid)
                    })
                } else {
                    map_vma(&boot, &self.scenario, &mm, &world_vmas, pi, vid)
                };
                r.map_err(|e| self.err(Some(spec.loc), format!("VMA `{}`: {e}", spec.name)))?;
            }
            mms.push(mm);
        }
        rcu_barrier(&boot);
        let children = (mms.len()..self.scenario.processes.len())
            .map(|_| ChildSlot(RawLock::new(Child::NotYet)))
            .collect();
        Ok(World {
            m,
            mms,
            children: Arc::new(children),
            vmas: world_vmas,
        })
    }

    /// The pfns of a memory range, or of one block of it.
    pub fn block_pfns(&self, m: &Machine, memory: usize, block: Option<u64>) -> (Pfn, Pfn) {
        let r = &m.ranges[memory];
        match block {
            None => (r.start, r.end()),
            Some(b) => {
                let bp = m.sparse.pages_per_section();
                let s = r.start.add(b * bp);
                (s, s.add(bp))
            }
        }
    }
}

impl World {
    /// Model CPU `i`, running its process's mm (`switch_mm()`), if any.
    pub fn cpu(&self, plan: &Plan, i: usize) -> Cpu {
        let c = self.m.cpu(i as u32);
        // A forked process's CPU joins its mm when the fork has made it.
        if let Some(mm) = plan.scenario.cpus[i].process.and_then(|p| self.mms.get(p)) {
            use_mm(&c, mm);
        }
        c
    }

    /// Where VMA `vid` of process `p` starts, if it is mapped yet.
    pub fn vma_start(&self, p: usize, vid: VmaId) -> Option<VirtAddr> {
        match self.vmas[p][vid].load(Ordering::Acquire) {
            0 => None,
            a => Some(VirtAddr::new(a)),
        }
    }
}

/// The model's zone for a scenario zone.
pub fn zone_type(z: crate::scenario::Zone) -> ZoneType {
    match z {
        crate::scenario::Zone::Movable => ZoneType::Movable,
        crate::scenario::Zone::Normal => ZoneType::Normal,
    }
}

/// The model's pgmap type for a scenario device type.
pub fn pgmap_type(t: crate::scenario::DevType) -> PgmapType {
    match t {
        crate::scenario::DevType::Generic => PgmapType::Generic,
        crate::scenario::DevType::Fsdax => PgmapType::FsDax,
        crate::scenario::DevType::Coherent => PgmapType::Coherent,
        crate::scenario::DevType::Private => PgmapType::Private,
    }
}

/// What page `i` of file `fi` holds on its backing store.
fn file_marker(fi: usize, i: u64) -> u64 {
    (0xf11e << 48) | ((fi as u64 + 1) << 32) | i
}

/// What a populated page holds at first: its VMA and page, to tell pages
/// apart in a data-integrity check.
fn marker(vid: VmaId, page: u64) -> u64 {
    ((vid as u64 + 1) << 32) | page
}

/// `mmap()` of VMA `vid` of process `pi`, populated if its spec says so;
/// records its address in `vmas`. Used by set-up and by the `mmap`
/// operation.
pub fn map_vma(
    cpu: &Cpu,
    sc: &Scenario,
    mm: &MmStruct,
    vmas: &[Vec<AtomicU64>],
    pi: usize,
    vid: VmaId,
) -> Result<VirtAddr, String> {
    let spec = &sc.processes[pi].vmas[vid];
    let backing = match spec.backing {
        Backing::Anon => BackingKind::Anon,
        Backing::Shared => BackingKind::Shared,
        Backing::Pfnmap => {
            let mi = spec.memory.unwrap_or(0);
            let r = &cpu.m.ranges[mi];
            let first = spec.block.unwrap_or(0) * cpu.m.sparse.pages_per_section();
            BackingKind::PfnMap(r.start.add(first))
        }
        Backing::Device => {
            let mi = spec.memory.unwrap_or(0);
            let r = &cpu.m.ranges[mi];
            let first = spec.block.unwrap_or(0) * cpu.m.sparse.pages_per_section();
            BackingKind::Device(r.start.add(first))
        }
        Backing::File => {
            let f = &sc.files[spec.file.ok_or("a file VMA without a file")?];
            let a = crate::ops::file_by_name(cpu, &f.name).ok_or("the file does not exist")?;
            BackingKind::File(a.id)
        }
    };
    let args = MmapArgs {
        addr: None,
        len: spec.pages << PAGE_SHIFT,
        prot: match spec.prot {
            Prot::None => mmap::Prot::None,
            Prot::Read => mmap::Prot::Read,
            Prot::ReadWrite => mmap::Prot::ReadWrite,
        },
        backing,
        thp: spec.thp,
    };
    let start = do_mmap(cpu, mm, &args).map_err(|e| format!("mmap: {e}"))?;
    // Release pairs with the Acquire in `World::vma_start`.
    vmas[pi][vid].store(start.as_u64(), Ordering::Release);
    if spec.populate && spec.backing != Backing::Pfnmap {
        for i in 0..spec.pages {
            let a = VirtAddr::new(start.as_u64() + i * PAGE_SIZE);
            // A shared file mapping is populated with read faults
            // (populate_vma_page_range(): no need to dirty it).
            let w = (spec.prot == Prot::ReadWrite && spec.backing != Backing::File)
                .then(|| marker(vid, i));
            access_user(cpu, mm, a, w).map_err(|e| format!("populate page {i}: {e}"))?;
        }
    }
    Ok(start)
}

/// Runs `f` (which allocates user pages) so that its allocations come from
/// `[start, end)`: see the module doc.
fn with_pages_from<T>(cpu: &Cpu, start: Pfn, end: Pfn, f: impl FnOnce() -> T) -> T {
    let m = &cpu.m;
    let inside = |p: PageRef<'_>| start <= p.pfn() && p.pfn() < end;
    let target_zone = m.sparse.pfn_to_page(start).zonenum(cpu);
    // The task prefers the target's node (numactl --preferred), so that its
    // zonelist starts there; only that node's other free blocks need holding.
    let target_nid = m.sparse.pfn_to_page(start).nid(cpu);
    let old_policy = cpu.set_mempolicy(Some(target_nid));
    let mut held: Vec<(PageRef<'_>, u32)> = Vec::new();
    let mut give_back: Vec<(PageRef<'_>, u32)> = Vec::new();
    for (zone, gfp) in [
        (ZoneType::Movable, Gfp::HIGHUSER_MOVABLE),
        (ZoneType::Normal, Gfp::KERNEL),
    ] {
        if zone == ZoneType::Normal && target_zone != ZoneType::Normal as usize {
            continue;
        }
        for order in (0..=m.max_order()).rev() {
            while let Some(p) = alloc_pages(cpu, gfp, order) {
                if p.zonenum(cpu) != zone as usize || p.nid(cpu) != target_nid {
                    // This zone has no block of this order left.
                    __free_pages(cpu, p, order);
                    break;
                }
                if inside(p) {
                    give_back.push((p, order));
                } else {
                    held.push((p, order));
                }
            }
        }
    }
    for (p, o) in give_back {
        __free_pages(cpu, p, o);
    }
    let r = f();
    cpu.set_mempolicy(old_policy);
    for (p, o) in held {
        __free_pages(cpu, p, o);
    }
    r
}
