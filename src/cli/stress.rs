//! `mmsim stress`: real threads, a random operation mix, detectors on.
//!
//! One OS thread per model CPU runs randomly chosen operations on one shared
//! address space and on hot-pluggable and device memory: GUP (fast and
//! slow, get and pin), unpin, mmap/munmap/madvise/mprotect, user accesses
//! (faults), fork (a child that writes, reads and pins its copy-on-write
//! pages, then exits), THP faults, folio splits and khugepaged collapses, memory add/online/offline/remove, `memremap_pages` /
//! `memunmap_pages` of a coherent device range mapped into the process. With
//! `--jitter` scheduling points pause now and then, and rarely stall for
//! milliseconds while IRQs are off — a preempted vCPU — which is what opens
//! the seed's race in practice: the remover must offline and remove a whole
//! block while the walker sleeps. At the end everything is torn down and
//! leak-checked. Exit 1 on a violation, with the seed, the violation and the
//! last operations of each CPU.

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mmsim_facade::RawLock as Mutex;
use mmsim_facade::sched::Mode;
use mmsim_facade::{AtomicBool, AtomicU64, Ordering};
use mmsim_model::detect::Violation;
use mmsim_model::fs::proc_page::kpageflags_read;
use mmsim_model::mm::compaction::compact_memory_range;
use mmsim_model::mm::filemap::{AddressSpace, find_get_page};
use mmsim_model::mm::gup::*;
use mmsim_model::mm::memory::access_user;
use mmsim_model::mm::memory_hotplug::{
    add_memory, memory_block_online, offline_and_remove_memory, online_memory_block,
};
use mmsim_model::mm::memremap::{
    DevPagemap, PgmapType, kill_dev_dax, memremap_pages, memunmap_pages,
};
use mmsim_model::mm::mmap::*;
use mmsim_model::mm::mmzone::ZoneType;
use mmsim_model::mm::truncate::{truncate_inode_pages_final, truncate_inode_pages_range};
use mmsim_model::mm::vmscan::reclaim_file_range;
use mmsim_model::safeguards::Safeguards;
use mmsim_model::types::PAGE_SIZE;
use mmsim_model::{Arch, Cpu, Machine, MachineConfig, Pfn, RangeConfig, RangeKind, VirtAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `mmsim stress` arguments.
#[derive(Args, Debug)]
pub struct StressArgs {
    /// Model CPUs, one OS thread each, 1 to 64 (default: the machine's
    /// cores, at least 2).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// TLB flush flavour.
    #[arg(long, default_value = "broadcast")]
    pub arch: String,
    /// Safeguard overrides, NAME=on|off (repeatable).
    #[arg(long = "safeguard")]
    pub safeguards: Vec<String>,
    /// Kernel configuration options, NAME=on|off (repeatable; see `mmsim
    /// info`). Safeguard defaults follow the configuration.
    #[arg(long = "config", value_name = "NAME=on|off")]
    pub config: Vec<String>,
    /// Random seed (the run's choices; thread timing is not reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long to run, e.g. 10s, 2m (default 10s unless --ops is given). A
    /// hard limit: a CPU still busy shortly after it is left behind and
    /// reported.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many operations in all (at least 1).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Random pauses at scheduling points, and rare IRQs-off stalls.
    #[arg(long)]
    pub jitter: bool,
    /// Longest IRQs-off stall with --jitter, in microseconds (0 to
    /// 1000000).
    #[arg(long, default_value_t = 3000)]
    pub stall_us: u64,
    /// Operation weights, NAME=W (repeatable): gup_fast, pin_fast, gup, pin,
    /// access, mmap, munmap, madvise (DONTNEED, COLD, PAGEOUT or FREE), mprotect, hotplug, memremap, fork (the
    /// process forks, or its child exits), child (the child writes, reads
    /// or pins), thp (the 2 MiB THP region is mapped afresh and faulted),
    /// split (split_folio of what the THP region maps), collapse
    /// (khugepaged's collapse of the THP region), shrink (the deferred
    /// split shrinker), ksm (identical pages written, `MADV_MERGEABLE` and
    /// ksmd passes, or one ksmd pass alone), hugetlb (a 2 MiB HugeTLB
    /// folio allocated from boot memory, vmemmap optimized with `--config
    /// hvo=on`, or one freed), file (a read, write or GUP-fast pin through the
    /// shared mapping of the file), find_get_page (a page-cache lookup),
    /// evict (reclaim of the file's clean folios), truncate (a hole punch
    /// of part of the file), compact (compaction's migrate scanner over the
    /// boot memory, the DIMM or the device range), kpageflags (a
    /// /proc/kpageflags read of 256 pfns from a random one). compact and
    /// kpageflags weigh 0 unless given: v6.18 leaves them open against
    /// hot-remove, fix or not.
    #[arg(long = "weight")]
    pub weights: Vec<String>,
    /// Keep going after the first violation until the time or op budget ends.
    #[arg(long)]
    pub keep_going: bool,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The most model CPUs (the machine's limit).
const MAX_CPUS: u32 = 64;

/// The longest `--stall-us`: a second. A preempted vCPU stalls for
/// milliseconds; a longer stall would only outlast `--duration`.
const MAX_STALL_US: u64 = 1_000_000;

/// How long after `--duration` a CPU may take to finish its operation (on
/// top of the longest stall) before it is left behind.
const STOP_GRACE: Duration = Duration::from_secs(2);

const OPS: [&str; 25] = [
    "gup_fast",
    "pin_fast",
    "gup",
    "pin",
    "access",
    "mmap",
    "munmap",
    "madvise",
    "mprotect",
    "hotplug",
    "memremap",
    "fork",
    "child",
    "thp",
    "split",
    "collapse",
    "shrink",
    "ksm",
    "hugetlb",
    "file",
    "find_get_page",
    "evict",
    "truncate",
    "compact",
    "kpageflags",
];
/// `compact` and `kpageflags` weigh nothing by default: v6.18 leaves both
/// pfn scanners open against hot-remove, the thread's fix included
/// (docs/SPECULATIVE.md), so a default run, whose "no violation" is the
/// verdict on the fix, leaves them out; `--weight compact=N` adds them.
const DEFAULT_WEIGHTS: [u32; 25] = [
    20, 30, 5, 5, 20, 3, 3, 5, 3, 6, 2, 2, 5, 2, 3, 3, 1, 3, 2, 6, 6, 3, 1, 0, 0,
];
/// HugeTLB folios the `hugetlb` operation keeps at most.
const HUGETLB_MAX: usize = 4;
const REGION_PAGES: u64 = 64;
const THP_PAGES: u64 = 512;

/// A small, seeded generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--duration `{s}`: expected a number and a unit (ms, s, m, h)"))?;
    let too_long = || format!("--duration `{s}`: longer than a year");
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        _ => return Err(format!("--duration `{s}`: unknown unit (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err(format!("--duration `{s}`: must be more than zero"));
    }
    if d > Duration::from_secs(365 * 24 * 3600) {
        return Err(too_long());
    }
    Ok(d)
}

struct Shared {
    m: Arc<Machine>,
    mm: Arc<MmStruct>,
    base: VirtAddr,
    /// A 2 MiB `MADV_HUGEPAGE` region: THPs to pin, access and split.
    thp_base: VirtAddr,
    boot: (Pfn, u64),
    dimm: (Pfn, u64),
    dax: (Pfn, u64),
    pgmap: Mutex<Option<Arc<DevPagemap>>>,
    /// The process's child, while it lives. Its operations run with this
    /// lock held, so that it exits only when nobody runs it (an mm's page
    /// tables go only with its last user).
    child: mmsim_facade::Mutex<Option<Arc<MmStruct>>>,
    dev_addr: VirtAddr,
    /// A file of `REGION_PAGES` pages and its shared mapping.
    file: Arc<AddressSpace>,
    file_base: VirtAddr,
    /// The boot range: where HugeTLB folios come from (always present).
    boot_range: (Pfn, Pfn),
    /// HugeTLB folios held, by head pfn.
    hugetlb: Mutex<Vec<Pfn>>,
    stop: AtomicBool,
    ops_done: AtomicU64,
    last: Vec<Mutex<Vec<String>>>,
}

fn remember(sh: &Shared, cpu: u32, what: String) {
    let mut l = sh.last[cpu as usize].lock();
    if l.len() == 8 {
        l.remove(0);
    }
    l.push(what);
}

fn addr(sh: &Shared, page: u64) -> VirtAddr {
    VirtAddr::new(sh.base.as_u64() + page * PAGE_SIZE)
}

fn one_op(sh: &Shared, cpu: &Cpu, rng: &mut Rng, op: &str) -> String {
    let p = rng.below(REGION_PAGES);
    let n = (1 + rng.below(8)).min(REGION_PAGES - p);
    // Now and then the THP region instead (its first pages).
    let a = if rng.below(4) == 0 {
        VirtAddr::new(sh.thp_base.as_u64() + p * PAGE_SIZE)
    } else {
        addr(sh, p)
    };
    let mm = &sh.mm;
    let mut pages = Vec::new();
    match op {
        "gup_fast" => {
            let r = get_user_pages_fast(cpu, mm, a, n, 0, &mut pages);
            put_user_pages(cpu, &pages);
            format!("get_user_pages_fast({a}, {n}) = {r:?}")
        }
        "pin_fast" => {
            // Sometimes through the device mapping.
            let (a, n) = if rng.below(4) == 0 {
                (sh.dev_addr, 1)
            } else {
                (a, n)
            };
            let r = pin_user_pages_fast(cpu, mm, a, n, FOLL_WRITE, &mut pages);
            unpin_user_pages(cpu, &pages);
            format!("pin_user_pages_fast({a}, {n}) = {r:?}")
        }
        "gup" => {
            let r = get_user_pages(cpu, mm, a, n, FOLL_WRITE, &mut pages);
            put_user_pages(cpu, &pages);
            format!("get_user_pages({a}, {n}) = {r:?}")
        }
        "pin" => {
            let r = pin_user_pages(cpu, mm, a, n, 0, &mut pages);
            unpin_user_pages(cpu, &pages);
            format!("pin_user_pages({a}, {n}) = {r:?}")
        }
        "access" => {
            let w = rng.below(2) == 0;
            let r = access_user(cpu, mm, a, w.then_some(rng.next()));
            format!("{} {a} = {r:?}", if w { "write" } else { "read" })
        }
        "mmap" => {
            // Munmap and re-create the whole region (holes included).
            let len = REGION_PAGES * PAGE_SIZE;
            let _ = do_munmap(cpu, mm, sh.base, len);
            let args = MmapArgs {
                addr: Some(sh.base),
                len,
                prot: Prot::ReadWrite,
                backing: BackingKind::Anon,
                thp: false,
            };
            format!("munmap+mmap(region) = {:?}", do_mmap(cpu, mm, &args))
        }
        "munmap" => format!(
            "munmap({a}, {n}) = {:?}",
            do_munmap(cpu, mm, a, n * PAGE_SIZE)
        ),
        "madvise" => match rng.below(5) {
            0 => format!(
                "madvise({a}, {n}, COLD) = {:?}",
                madvise_folios(cpu, mm, a, n * PAGE_SIZE, Advice::Cold)
            ),
            1 => format!(
                "madvise({a}, {n}, PAGEOUT) = {:?}",
                madvise_folios(cpu, mm, a, n * PAGE_SIZE, Advice::Pageout)
            ),
            2 => format!(
                "madvise({a}, {n}, FREE) = {:?}",
                madvise_folios(cpu, mm, a, n * PAGE_SIZE, Advice::Free)
            ),
            _ => format!(
                "madvise({a}, {n}, DONTNEED) = {:?}",
                madvise_dontneed(cpu, mm, a, n * PAGE_SIZE)
            ),
        },
        "mprotect" => {
            let prot = if rng.below(2) == 0 {
                Prot::Read
            } else {
                Prot::ReadWrite
            };
            format!(
                "mprotect({a}, {n}, {prot:?}) = {:?}",
                do_mprotect(cpu, mm, a, n * PAGE_SIZE, prot)
            )
        }
        "hotplug" => {
            // Alternately remove the DIMM and bring it back, so that there
            // are stretches with its memmap gone.
            let (start, nr) = sh.dimm;
            if sh.m.blocks.lock().contains_key(&start.as_u64()) {
                format!(
                    "offline_and_remove_memory(dimm) = {:?}",
                    offline_and_remove_memory(cpu, start, nr)
                )
            } else {
                let r = add_memory(cpu, start, nr).and_then(|_| {
                    let mut b = start;
                    while b < start.add(nr) {
                        online_memory_block(cpu, b, ZoneType::Movable)?;
                        b = b.add(sh.m.block_pages());
                    }
                    Ok(())
                });
                format!("add_memory+online(dimm) = {r:?}")
            }
        }
        "thp" => {
            let len = THP_PAGES * PAGE_SIZE;
            let _ = do_munmap(cpu, mm, sh.thp_base, len);
            let args = MmapArgs {
                addr: Some(sh.thp_base),
                len,
                prot: Prot::ReadWrite,
                backing: BackingKind::Anon,
                thp: true,
            };
            let r = do_mmap(cpu, mm, &args)
                .and_then(|_| access_user(cpu, mm, sh.thp_base, Some(rng.next())));
            format!("munmap+mmap+fault(thp) = {r:?}")
        }
        "split" => {
            let a = VirtAddr::new(sh.thp_base.as_u64() + rng.below(THP_PAGES) * PAGE_SIZE);
            let end = VirtAddr::new(a.as_u64() + PAGE_SIZE);
            format!(
                "split_folio({a}) = {:?}",
                mmsim_model::mm::huge_memory::split_huge_pages_pid(cpu, mm, a, end)
            )
        }
        "shrink" => format!(
            "deferred_split_scan() = {}",
            mmsim_model::mm::huge_memory::deferred_split_scan(cpu)
        ),
        "file" => {
            let a = VirtAddr::new(sh.file_base.as_u64() + p * PAGE_SIZE);
            match rng.below(3) {
                0 => {
                    let r = pin_user_pages_fast(cpu, mm, a, n, 0, &mut pages);
                    unpin_user_pages(cpu, &pages);
                    format!("pin_user_pages_fast(file {a}, {n}) = {r:?}")
                }
                1 => format!("read file {a} = {:?}", access_user(cpu, mm, a, None)),
                _ => format!(
                    "write file {a} = {:?}",
                    access_user(cpu, mm, a, Some(rng.next()))
                ),
            }
        }
        "find_get_page" => format!(
            "find_get_page(file, {p}) = {:?}",
            find_get_page(cpu, &sh.file, p)
        ),
        "evict" => format!(
            "evict(file, {p}, {n}) = {}",
            reclaim_file_range(cpu, &sh.file, p, n)
        ),
        "truncate" => format!(
            "truncate(file, {p}, {n}) = {}",
            truncate_inode_pages_range(cpu, &sh.file, p, p + n)
        ),
        "collapse" => format!(
            "collapse_huge_page(thp) = {:?}",
            mmsim_model::mm::khugepaged::collapse_huge_page(cpu, mm, sh.thp_base)
        ),
        "fork" => {
            let mut g = sh.child.lock(&cpu.sched);
            match g.take() {
                Some(child) => {
                    exit_mmap(cpu, &child);
                    format!("child mm{} exits", child.id)
                }
                None => {
                    let r = mmsim_model::kernel::fork::dup_mm(cpu, mm);
                    let s = format!("fork() = {:?}", r.as_ref().map(|c| c.id));
                    *g = r.ok();
                    s
                }
            }
        }
        "child" => {
            let g = sh.child.lock(&cpu.sched);
            let Some(child) = g.as_ref() else {
                return "child: none".into();
            };
            use_mm(cpu, child);
            match rng.below(3) {
                0 => {
                    let r = access_user(cpu, child, a, Some(rng.next()));
                    format!("child write {a} = {r:?}")
                }
                1 => {
                    let r = access_user(cpu, child, a, None);
                    format!("child read {a} = {r:?}")
                }
                _ => {
                    let flags = if rng.below(2) == 0 { FOLL_WRITE } else { 0 };
                    let r = pin_user_pages_fast(cpu, child, a, n, flags, &mut pages);
                    unpin_user_pages(cpu, &pages);
                    format!("child pin_user_pages_fast({a}, {n}, {flags:#x}) = {r:?}")
                }
            }
        }
        "ksm" => {
            if rng.below(2) == 0 {
                // Two identical pages, then MADV_MERGEABLE and ksmd.
                let v = 0x6b6d_0000 + rng.below(4);
                let _ = access_user(cpu, mm, a, Some(v));
                let b = VirtAddr::new(a.as_u64() + (n - 1) * PAGE_SIZE);
                let _ = access_user(cpu, mm, b, Some(v));
                format!(
                    "ksm_merge({a}, {n}) = {:?}",
                    mmsim_model::mm::ksm::ksm_merge(cpu, mm, a, n * PAGE_SIZE)
                )
            } else {
                format!(
                    "ksm_scan() = {}",
                    mmsim_model::mm::ksm::ksm_scan_thread_once(cpu)
                )
            }
        }
        "hugetlb" => {
            let held = sh.hugetlb.lock().pop();
            match held {
                Some(h) if rng.below(2) == 0 || sh.hugetlb.lock().len() + 1 >= HUGETLB_MAX => {
                    let f = mmsim_model::mm::mm_types::Folio::from_head(sh.m.sparse.pfn_to_page(h));
                    mmsim_model::mm::page_ref::folio_put(cpu, f);
                    format!("free_huge_folio({:#x})", h.as_u64())
                }
                _ => {
                    if let Some(h) = held {
                        sh.hugetlb.lock().push(h);
                    }
                    let (s, e) = sh.boot_range;
                    let r = mmsim_model::mm::hugetlb::alloc_hugetlb_folio(cpu, s, e);
                    if let Ok(f) = r {
                        sh.hugetlb.lock().push(f.pfn());
                    }
                    format!("alloc_hugetlb_folio() = {:?}", r.map(|f| f.pfn()))
                }
            }
        }
        "memremap" => {
            let mut g = sh.pgmap.lock();
            match g.take() {
                Some(pg) => {
                    kill_dev_dax(cpu, &pg);
                    memunmap_pages(cpu, &pg);
                    "kill_dev_dax + memunmap_pages(dax)".into()
                }
                None => {
                    let r = memremap_pages(cpu, sh.dax.0, sh.dax.1, PgmapType::Coherent);
                    let s = format!("memremap_pages(dax) = {:?}", r.as_ref().map(|_| ()));
                    *g = r.ok();
                    s
                }
            }
        }
        "compact" => {
            let (name, (start, nr)) = match rng.below(3) {
                0 => ("boot", sh.boot),
                1 => ("dimm", sh.dimm),
                _ => ("dax", sh.dax),
            };
            let r = compact_memory_range(cpu, start, start.add(nr));
            format!(
                "compact({name}) = {} scanned, {} isolated, {} migrated",
                r.scanned, r.isolated, r.migrated
            )
        }
        "kpageflags" => {
            let end = sh.dax.0.add(sh.dax.1).as_u64();
            let start = Pfn::new(rng.below(end));
            let n = 256.min(end - start.as_u64());
            let f = kpageflags_read(cpu, start, n);
            let online = f.iter().filter(|&&x| x != 0).count();
            format!("kpageflags({start}, {n}) = {online} online")
        }
        _ => String::new(),
    }
}

/// The outcome of a stress run.
pub struct StressResult {
    /// Violations found.
    pub violations: Vec<Violation>,
    /// Operations run.
    pub ops: u64,
    /// Seconds.
    pub elapsed: f64,
    /// Seconds to the first violation.
    pub first_violation_s: Option<f64>,
    /// Pages leaked at teardown.
    pub leaked: u64,
    /// Last operations per CPU.
    pub last_ops: Vec<Vec<String>>,
    /// Model CPUs that ran.
    pub cpus: u32,
    /// CPUs still busy when the run had to end (`--duration` is a hard
    /// limit), with where each waited, if it did. Teardown and the leak
    /// check do not run then.
    pub left_behind: Vec<(u32, Option<String>)>,
}

/// Runs the stress test.
pub fn stress(a: &StressArgs) -> Result<StressResult, String> {
    let arch = Arch::from_name(&a.arch)
        .ok_or_else(|| format!("unknown --arch `{}` (ipi, broadcast)", a.arch))?;
    let mut kcfg = mmsim_model::KernelConfig::default();
    let config =
        super::check::switches_once("--config", &a.config, super::check::parse_config_switch)?;
    for (name, on) in config {
        kcfg.set_by_name(&name, on)?;
    }
    let mut sg = Safeguards::for_config(&kcfg);
    let switches =
        super::check::switches_once("--safeguard", &a.safeguards, super::check::parse_switch)?;
    for (name, on) in switches {
        sg.set_by_name(&name, on)?;
    }
    let mut weights = DEFAULT_WEIGHTS;
    let mut given: Vec<&str> = Vec::new();
    for w in &a.weights {
        let (name, v) = w
            .split_once('=')
            .ok_or_else(|| format!("--weight `{w}`: expected NAME=W"))?;
        let i = OPS.iter().position(|o| *o == name).ok_or_else(|| {
            format!(
                "--weight: unknown operation `{name}` (known: {})",
                OPS.join(", ")
            )
        })?;
        if given.contains(&name) {
            return Err(format!("--weight {name}: given twice"));
        }
        given.push(name);
        weights[i] = v
            .parse()
            .ok()
            .filter(|&w| w <= 1_000_000)
            .ok_or_else(|| format!("--weight `{w}`: W is a whole number from 0 to 1000000"))?;
    }
    let total: u32 = weights.iter().sum();
    if total == 0 {
        return Err("every weight is zero".into());
    }
    if a.ops == Some(0) {
        return Err("--ops 0: at least one operation".into());
    }
    if a.stall_us > MAX_STALL_US {
        return Err(format!(
            "--stall-us {}: the longest stall is from 0 to {MAX_STALL_US} microseconds",
            a.stall_us
        ));
    }
    let duration = match (&a.duration, a.ops) {
        (Some(d), _) => Some(parse_duration(d)?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let ncpu = match a.cpus {
        Some(n) if !(1..=MAX_CPUS).contains(&n) => {
            return Err(format!("--cpus {n}: the model runs 1 to {MAX_CPUS} CPUs"));
        }
        Some(n) => n,
        // The default is the host's cores, within the model's range.
        None => std::thread::available_parallelism()
            .map_or(2, |n| n.get() as u32)
            .clamp(2, MAX_CPUS),
    };
    let mut cfg = MachineConfig {
        nr_cpus: ncpu,
        section_shift: 21,
        ranges: vec![
            RangeConfig {
                name: "boot".into(),
                kind: RangeKind::Boot,
                bytes: 64 << 20,
                node: 0,
            },
            RangeConfig {
                name: "dimm".into(),
                kind: RangeKind::Hotplug,
                bytes: 4 << 20,
                node: 0,
            },
            RangeConfig {
                name: "dax".into(),
                kind: RangeKind::Device,
                bytes: 2 << 20,
                node: 0,
            },
        ],
        arch,
        safeguards: sg,
        config: kcfg,
        mode: if a.jitter { Mode::Jitter } else { Mode::Native },
        ..Default::default()
    };
    cfg.tracing = false;
    let m = Machine::new(cfg)?;
    if a.jitter {
        // The context is shared; jitter settings are fixed before CPUs run.
        m.ctx.set_jitter(64, a.stall_us, a.seed);
    }
    let boot = m.boot_cpu();
    let boot_range = m.range("boot").ok_or("no boot memory")?.clone();
    let dimm = m.range("dimm").ok_or("no dimm")?.clone();
    let dax = m.range("dax").ok_or("no dax")?.clone();
    add_memory(&boot, dimm.start, dimm.nr_pages).map_err(|e| e.to_string())?;
    let mut b = dimm.start;
    while b < dimm.end() {
        memory_block_online(&boot, b, ZoneType::Movable).map_err(|e| e.to_string())?;
        b = b.add(m.block_pages());
    }
    let pg = memremap_pages(&boot, dax.start, dax.nr_pages, PgmapType::Coherent)
        .map_err(|e| e.to_string())?;
    let mm = mm_alloc(&boot).map_err(|e| e.to_string())?;
    let base = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: REGION_PAGES * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let thp_base = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: THP_PAGES * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Anon,
            thp: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let dev_addr = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: dax.nr_pages * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::Device(dax.start),
            thp: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let file = AddressSpace::new(&boot, "data", REGION_PAGES, false, |i| i);
    let file_base = do_mmap(
        &boot,
        &mm,
        &MmapArgs {
            addr: None,
            len: REGION_PAGES * PAGE_SIZE,
            prot: Prot::ReadWrite,
            backing: BackingKind::File(file.id),
            thp: false,
        },
    )
    .map_err(|e| e.to_string())?;
    let sh = Arc::new(Shared {
        m: m.clone(),
        mm,
        base,
        thp_base,
        boot: (boot_range.start, boot_range.nr_pages),
        dimm: (dimm.start, dimm.nr_pages),
        dax: (dax.start, dax.nr_pages),
        pgmap: Mutex::new(Some(pg)),
        child: mmsim_facade::Mutex::new(mmsim_facade::point!("stress", "child process"), None),
        dev_addr,
        file,
        file_base,
        boot_range: {
            let r = m.range("boot").ok_or("no boot memory")?;
            (r.start, r.end())
        },
        hugetlb: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        ops_done: AtomicU64::new(0),
        last: (0..ncpu).map(|_| Mutex::new(Vec::new())).collect(),
    });
    let start = Instant::now();
    let first_violation = Arc::new(Mutex::new(None::<f64>));
    let mut hs = Vec::new();
    for c in 0..ncpu {
        let (sh, cpu) = (sh.clone(), m.cpu(c));
        let (weights, seed, budget) = (weights, a.seed, a.ops);
        hs.push(std::thread::spawn(move || {
            use_mm(&cpu, &sh.mm);
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (c as u64 + 1));
            while !sh.stop.load(Ordering::Relaxed) {
                if let Some(b) = budget
                    && sh.ops_done.fetch_add(1, Ordering::Relaxed) >= b
                {
                    break;
                }
                let mut pick = rng.below(total as u64) as u32;
                let mut i = 0;
                while pick >= weights[i] {
                    pick -= weights[i];
                    i += 1;
                }
                let op = OPS[i];
                let mut desc = String::new();
                let _ = cpu.run(|| desc = one_op(&sh, &cpu, &mut rng, op));
                if budget.is_none() {
                    sh.ops_done.fetch_add(1, Ordering::Relaxed);
                }
                remember(
                    &sh,
                    c,
                    if desc.is_empty() {
                        format!("{op}: oops")
                    } else {
                        desc
                    },
                );
            }
            cpu.finish();
        }));
    }
    let keep_going = a.keep_going;
    let pb = ProgressBar::with_draw_target(
        duration.map(|d| d.as_secs().max(1)),
        ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let el = start.elapsed();
        let done = sh.ops_done.load(Ordering::Relaxed);
        let viol = m.detect.count();
        let mut settled = false;
        if viol > 0 {
            let mut f = first_violation.lock();
            let first = *f.get_or_insert(el.as_secs_f64());
            // A warning (pfn-not-valid) usually comes right before the
            // fatal finding it announces: give it half a second.
            settled = el.as_secs_f64() - first > 0.5
                || m.detect.violations().iter().any(|v| v.kind.fatal());
        }
        pb.set_position(el.as_secs());
        pb.set_message(format!(
            "{:.0} ops/s, {done} ops, {viol} violations",
            done as f64 / el.as_secs_f64().max(1e-9)
        ));
        let out_of_time = duration.is_some_and(|d| el >= d);
        let out_of_ops = a.ops.is_some_and(|b| done >= b);
        if out_of_time
            || out_of_ops
            || (settled && !keep_going)
            || hs.iter().all(|h| h.is_finished())
        {
            break;
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    // `--duration` is a hard limit: each CPU finishes the operation it is
    // in, which takes at most a stall and a little more, unless it is
    // blocked. One still busy after that is left behind (and reported):
    // the process ends without it, and without teardown, which would race
    // with it.
    let limit = Instant::now() + STOP_GRACE + Duration::from_micros(a.stall_us);
    while Instant::now() < limit && !hs.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut left_behind = Vec::new();
    for (c, h) in hs.into_iter().enumerate() {
        if h.is_finished() {
            if h.join().is_err() {
                // The panic was printed; it is a defect of the model.
                panic!("stress cpu{c} panicked");
            }
        } else {
            let at = m.ctx.waiting_at(c as u32).map(|p| p.to_string());
            left_behind.push((c as u32, at));
        }
    }
    pb.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    // Teardown: the process exits, the device goes away, leaks are counted.
    let leaked = if left_behind.is_empty() {
        let pg = sh.pgmap.lock().take();
        let child = sh.child.lock(&boot.sched).take();
        let hugetlb = std::mem::take(&mut *sh.hugetlb.lock());
        let _ = boot.run(|| {
            for h in hugetlb {
                let f = mmsim_model::mm::mm_types::Folio::from_head(m.sparse.pfn_to_page(h));
                mmsim_model::mm::page_ref::folio_put(&boot, f);
            }
            if let Some(child) = child {
                exit_mmap(&boot, &child);
            }
            exit_mmap(&boot, &sh.mm);
            truncate_inode_pages_final(&boot, &sh.file);
            if let Some(pg) = pg {
                memunmap_pages(&boot, &pg);
            }
        });
        drop(boot);
        m.check_leaks()
    } else {
        0
    };
    let last_ops = sh.last.iter().map(|l| l.lock().clone()).collect();
    let ops = sh.ops_done.load(Ordering::Relaxed);
    let first_violation_s = *first_violation.lock();
    Ok(StressResult {
        violations: m.detect.violations(),
        ops,
        elapsed,
        first_violation_s,
        leaked,
        last_ops,
        cpus: ncpu,
        left_behind,
    })
}

/// Runs `mmsim stress`.
pub fn run(a: &StressArgs) -> u8 {
    let r = match stress(a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mmsim stress: {e}");
            return 2;
        }
    };
    let bad = !r.violations.is_empty();
    if a.json {
        let v: Vec<_> = r
            .violations
            .iter()
            .map(|v| serde_json::json!({"kind": v.kind.name(), "cpu": v.cpu, "function": v.function, "step": v.step, "pfn": v.pfn.map(|p| p.as_u64()), "detail": v.detail}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"seed": a.seed, "arch": a.arch, "cpus": r.cpus, "jitter": a.jitter, "ops": r.ops, "elapsed_s": r.elapsed,
                "ops_per_s": r.ops as f64 / r.elapsed.max(1e-9), "violations": v, "first_violation_s": r.first_violation_s,
                "leaked_pages": r.leaked, "last_ops": r.last_ops,
                "left_behind": r.left_behind.iter().map(|(c, at)| serde_json::json!({"cpu": c, "waiting_at": at})).collect::<Vec<_>>()})
        );
    } else {
        println!(
            "mmsim stress: seed {}, {} CPUs, {} ops in {:.1} s ({:.0} ops/s), {} violation(s), {} page(s) leaked",
            a.seed,
            r.cpus,
            r.ops,
            r.elapsed,
            r.ops as f64 / r.elapsed.max(1e-9),
            r.violations.len(),
            r.leaked
        );
        for v in &r.violations {
            println!("  FOUND {v}");
        }
        for (c, at) in &r.left_behind {
            println!(
                "  cpu{c} was still busy {} s after the deadline{}: left behind, no teardown or leak check",
                STOP_GRACE.as_secs(),
                at.as_ref()
                    .map_or(String::new(), |p| format!(" (waiting at {p})"))
            );
        }
        if bad {
            if let Some(t) = r.first_violation_s {
                println!("  first violation after {t:.2} s");
            }
            for (c, ops) in r.last_ops.iter().enumerate() {
                println!("  cpu{c} last operations:");
                for o in ops {
                    println!("    {o}");
                }
            }
        }
    }
    if bad { 1 } else { 0 }
}
