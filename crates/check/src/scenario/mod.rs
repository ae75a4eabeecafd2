//! Scenario files: what exists at the start, what each model CPU does, and
//! what should happen.
//!
//! The format is a contract (`SCENARIOS.md` in the project's shared folder):
//! names and meanings are fixed, fields and operations may be added. A file is
//! parsed with the `toml` crate into [`raw`] tables that deny unknown fields
//! and keep the span of every value, then [`validate`]d: every name a value
//! uses (a VMA, a memory range, a reference, a process) must be defined, and
//! every error names `file:line:column`.
//!
//! The result, a [`Scenario`], is plain data: indices instead of names, sizes
//! in pages, each operation with the line it came from. Building a machine
//! from it is [`crate::setup`]'s job.
//!
//! Additions to the contract: `[expect] check_leaks` (default true: teardown
//! unmaps every process and reports pages that did not return to the
//! allocator).

mod raw;
mod validate;

pub use validate::{
    MAX_RANGE_BYTES, MAX_TOTAL_BYTES, human, op_fields, op_names, parse, parse_bytes,
};

use mmsim_model::Arch;
use mmsim_model::KernelConfig;
use mmsim_model::safeguards::Safeguards;
use std::fmt;

/// A position in a scenario file (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    /// Line.
    pub line: usize,
    /// Column, in characters.
    pub column: usize,
}

/// A scenario that does not parse, or names something that does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file (or `builtin:NAME`).
    pub file: String,
    /// Where.
    pub loc: Loc,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.loc.line, self.loc.column, self.message
        )
    }
}

impl std::error::Error for ScenarioError {}

/// What a `[[memory]]` range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// Boot memory, online in `ZONE_NORMAL`.
    Boot,
    /// A hot-pluggable DIMM.
    Hotplug,
    /// Device memory (`memremap_pages`).
    Device,
}

impl MemKind {
    /// The file's name for it.
    pub fn name(self) -> &'static str {
        match self {
            MemKind::Boot => "boot",
            MemKind::Hotplug => "hotplug",
            MemKind::Device => "device",
        }
    }
}

/// The state a hotplug or device range is in when the CPUs start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemState {
    /// Boot memory: online from the start.
    Boot,
    /// Not added (hotplug) or not mapped (device).
    Absent,
    /// Hotplug: added, not online.
    Offline,
    /// Hotplug: online.
    Online,
    /// Device: `memremap_pages()` done.
    Mapped,
}

impl MemState {
    /// The file's name for it.
    pub fn name(self) -> &'static str {
        match self {
            MemState::Boot => "boot",
            MemState::Absent => "absent",
            MemState::Offline => "offline",
            MemState::Online => "online",
            MemState::Mapped => "mapped",
        }
    }
}

/// A zone to online memory into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// `ZONE_MOVABLE`.
    Movable,
    /// `ZONE_NORMAL`.
    Normal,
}

/// The flavour of device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevType {
    /// device-dax (`MEMORY_DEVICE_GENERIC`).
    Generic,
    /// `MEMORY_DEVICE_FS_DAX`.
    Fsdax,
    /// `MEMORY_DEVICE_COHERENT`.
    Coherent,
    /// `MEMORY_DEVICE_PRIVATE`.
    Private,
}

/// A `[[memory]]` range.
#[derive(Clone, Debug)]
pub struct Memory {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: MemKind,
    /// Size in bytes (whole sections).
    pub bytes: u64,
    /// State at start.
    pub state: MemState,
    /// Zone (hotplug memory).
    pub zone: Zone,
    /// Device flavour (device memory).
    pub dev_type: DevType,
    /// NUMA node (`node`, default 0).
    pub node: u32,
    /// Where it is defined.
    pub loc: Loc,
}

/// Page protections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `PROT_NONE`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// What a VMA maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory.
    Anon,
    /// Shared anonymous memory (shmem).
    Shared,
    /// ZONE_DEVICE pages of a device range.
    Device,
    /// `VM_PFNMAP` of a memory range's frames.
    Pfnmap,
    /// A shared mapping of a `[[file]]` (its page cache).
    File,
}

impl Backing {
    /// The file's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Backing::Anon => "anon",
            Backing::Shared => "shared",
            Backing::Device => "device",
            Backing::Pfnmap => "pfnmap",
            Backing::File => "file",
        }
    }
}

/// A mapping: a `[[process.vma]]` or what an `mmap` operation creates.
#[derive(Clone, Debug)]
pub struct VmaSpec {
    /// Its name (unique in its process).
    pub name: String,
    /// Length in pages.
    pub pages: u64,
    /// Protection.
    pub prot: Prot,
    /// Backing.
    pub backing: Backing,
    /// Index of the memory range its pages come from.
    pub memory: Option<usize>,
    /// Which section-sized block of that range.
    pub block: Option<u64>,
    /// Fault every page in at creation.
    pub populate: bool,
    /// Allow PMD-size folios.
    pub thp: bool,
    /// The `[[file]]` a file VMA maps.
    pub file: Option<usize>,
    /// Where it is defined.
    pub loc: Loc,
}

/// A `[[file]]`: a file whose folios live in the page cache.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Its name.
    pub name: String,
    /// Size in pages.
    pub pages: u64,
    /// The memory range its cached folios are placed in at start.
    pub memory: Option<usize>,
    /// Which block of that range.
    pub block: Option<u64>,
    /// Every page is in the page cache at start.
    pub cached: bool,
    /// A tmpfs file rather than a disk file system's.
    pub shmem: bool,
    /// Where it is defined.
    pub loc: Loc,
}

/// Pages of a `[[file]]`: `page` and `pages` (defaulted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FRange {
    /// The file, by index in [`Scenario::files`].
    pub file: usize,
    /// First page.
    pub page: u64,
    /// How many pages.
    pub pages: u64,
}

/// A process: its initial mappings. `vmas` holds every VMA name the process
/// ever has: first the `[[process.vma]]` ones (`initial` of them), then those
/// that `mmap` operations create.
#[derive(Clone, Debug)]
pub struct Process {
    /// Its name.
    pub name: String,
    /// Every mapping, by [`VmaId`].
    pub vmas: Vec<VmaSpec>,
    /// How many of `vmas` exist at start.
    pub initial: usize,
    /// For a process a `fork` operation creates (named by its `as`): the
    /// forking process. Such a process has no mm at start; its `vmas`
    /// begin with every VMA name of the parent (the child inherits the
    /// mappings that exist when it forks), then those its own `mmap`
    /// operations create.
    pub forked_from: Option<usize>,
}

/// A VMA of a process, by index in [`Process::vmas`].
pub type VmaId = usize;

/// A reference (`as`) of a CPU, by index in that CPU's list.
pub type RefId = usize;

/// The GUP entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GupFn {
    /// `get_user_pages_fast()`.
    GetUserPagesFast,
    /// `pin_user_pages_fast()`.
    PinUserPagesFast,
    /// `get_user_pages()`.
    GetUserPages,
    /// `pin_user_pages()`.
    PinUserPages,
}

impl GupFn {
    /// Whether it pins (`FOLL_PIN`) rather than gets (`FOLL_GET`).
    pub fn pins(self) -> bool {
        matches!(self, GupFn::PinUserPagesFast | GupFn::PinUserPages)
    }
}

/// A user range: `page` and `pages` of a VMA (pages already defaulted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct URange {
    /// The VMA.
    pub vma: VmaId,
    /// First page, from the VMA's start.
    pub page: u64,
    /// How many pages.
    pub pages: u64,
}

/// A physical range: a memory range, one block of it or all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MRange {
    /// The memory range.
    pub memory: usize,
    /// One block, or every block.
    pub block: Option<u64>,
}

/// One operation of a CPU. Names as the kernel's.
#[derive(Clone, Debug)]
pub enum OpKind {
    /// A GUP call; `flags` are `FOLL_*` bits; `as_` names the result.
    Gup {
        /// Which entry point.
        func: GupFn,
        /// The user range.
        range: URange,
        /// `FOLL_*` bits from `flags`.
        flags: u32,
        /// The reference it defines.
        as_: Option<RefId>,
    },
    /// `put_page()` on every page of a `FOLL_GET` reference.
    PutPages {
        /// The reference.
        ref_: RefId,
    },
    /// `unpin_user_pages()` of a `FOLL_PIN` reference.
    UnpinUserPages {
        /// The reference.
        ref_: RefId,
    },
    /// A user load.
    Read {
        /// The VMA.
        vma: VmaId,
        /// The page.
        page: u64,
    },
    /// A user store.
    Write {
        /// The VMA.
        vma: VmaId,
        /// The page.
        page: u64,
        /// The word stored.
        value: u64,
    },
    /// `handle_mm_fault()`.
    Fault {
        /// The VMA.
        vma: VmaId,
        /// The page.
        page: u64,
        /// A write fault.
        write: bool,
    },
    /// A new VMA (its spec is the process's `vmas[vma]`).
    Mmap {
        /// The VMA it creates.
        vma: VmaId,
    },
    /// `munmap()`.
    Munmap {
        /// The range.
        range: URange,
    },
    /// `madvise(MADV_DONTNEED)`.
    MadviseDontneed {
        /// The range.
        range: URange,
    },
    /// `madvise(MADV_COLD | MADV_PAGEOUT | MADV_FREE)`: large folios the
    /// range covers in part are split at once.
    Madvise {
        /// The range.
        range: URange,
        /// The advice.
        advice: mmsim_model::mm::mmap::Advice,
    },
    /// `mprotect()`.
    Mprotect {
        /// The range.
        range: URange,
        /// The new protection.
        prot: Prot,
    },
    /// Migrate the folios of a range elsewhere.
    MigratePages {
        /// The range.
        range: URange,
    },
    /// `add_memory()`.
    AddMemory(MRange),
    /// `online_pages()`.
    OnlinePages(MRange, Zone),
    /// `offline_pages()`.
    OfflinePages(MRange),
    /// `remove_memory()`.
    RemoveMemory(MRange),
    /// `offline_and_remove_memory()`: every block offlined in order, then
    /// removed.
    OfflineAndRemoveMemory(MRange),
    /// `memremap_pages()`.
    MemremapPages(MRange),
    /// `memunmap_pages()`.
    MemunmapPages(MRange),
    /// A driver zapping every user mapping of a device range.
    UnmapMappingRange(MRange),
    /// `pfn_valid()` on each pfn.
    PfnValid(MRange),
    /// `pfn_to_online_page()` then `folio_try_get()`/`folio_put()` on each
    /// pfn.
    PfnWalk(MRange),
    /// Compaction's migrate scanner over the range
    /// (`isolate_migratepages_block()`, `MIGRATE_SYNC` as
    /// `/proc/sys/vm/compact_memory` runs it).
    Compact(MRange),
    /// A `/proc/kpageflags` reader over the range (`pfn_to_online_page()`,
    /// `stable_page_flags()`).
    Kpageflags(MRange),
    /// `split_folio()` of the large folio mapped at a page.
    SplitFolio {
        /// The VMA.
        vma: VmaId,
        /// The page.
        page: u64,
    },
    /// khugepaged's collapse of the PMD-sized range holding a page
    /// (`collapse_huge_page()`).
    Collapse {
        /// The VMA.
        vma: VmaId,
        /// The page.
        page: u64,
    },
    /// A page-cache lookup (`filemap_get_entry()`), then `folio_put()`.
    FindGetPage(FRange),
    /// Reclaim of the clean page-cache folios of a file range
    /// (`__remove_mapping()`).
    Evict(FRange),
    /// `truncate_inode_pages_range()` of a file range.
    Truncate(FRange),
    /// `madvise(MADV_MERGEABLE)` on a range, then ksmd scans until the
    /// identical pages are merged (`ksm_do_scan()`).
    KsmMerge {
        /// The range.
        range: URange,
    },
    /// One full ksmd pass (`ksm_scan_thread()` → `ksm_do_scan()`).
    KsmScan,
    /// A 2 MiB HugeTLB folio from a memory range, its vmemmap optimized
    /// where HVO is on (`alloc_surplus_hugetlb_folio()`); `put_pages` of
    /// `as` frees it.
    AllocHugetlb {
        /// Where its pages come from.
        range: MRange,
        /// The reference it is held by, by index in the CPU's references.
        as_: Option<usize>,
    },
    /// `fork()` of the CPU's process (`dup_mm()`): creates process
    /// `child`, which CPUs with `process = "<as>"` run once it exists.
    Fork {
        /// The child, by index in [`Scenario::processes`].
        child: usize,
    },
}

/// An operation and where it is written.
#[derive(Clone, Debug)]
pub struct Op {
    /// The operation's name in the file (`pin_user_pages_fast`).
    pub name: &'static str,
    /// What it does.
    pub kind: OpKind,
    /// Where it is written.
    pub loc: Loc,
}

/// A `[[cpu]]`.
#[derive(Clone, Debug)]
pub struct CpuSpec {
    /// The process whose mm it runs, if there is any process.
    pub process: Option<usize>,
    /// Its operations, in order.
    pub ops: Vec<Op>,
    /// The names of its references, by [`RefId`].
    pub refs: Vec<String>,
    /// Where it is defined.
    pub loc: Loc,
}

/// `[expect]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// A violation kind's stable name, or `"none"`.
    pub violation: String,
    /// Teardown leak check.
    pub check_leaks: bool,
    /// The violation is a finding about the kernel, which no safeguard of
    /// the model removes.
    pub finding: bool,
    /// The number of schedules the claim is made for, if the file says.
    pub iterations: Option<u64>,
    /// The PCT bug depth the claims are made with, if the file says
    /// (default 3).
    pub depth: Option<usize>,
    /// The outcome with other settings.
    pub variants: Vec<Variant>,
}

/// `[[expect.variant]]`: the outcome when settings change (the test suite
/// checks every one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// `arch`, if it changes.
    pub arch: Option<Arch>,
    /// Configuration switches, on top of the file's `[config]`.
    pub config: Vec<(String, bool)>,
    /// Safeguard switches, on top of the file's.
    pub safeguards: Vec<(String, bool)>,
    /// The violation kind expected, or `"none"`.
    pub violation: String,
    /// The number of schedules the claim is made for, if the variant says.
    pub iterations: Option<u64>,
    /// Where it is written.
    pub loc: Loc,
}

impl Variant {
    /// The settings as `mmsim check` flags (`--arch ipi --safeguard x=off`).
    pub fn flags(&self) -> String {
        let mut v = Vec::new();
        if let Some(a) = self.arch {
            v.push(format!("--arch {}", a.name()));
        }
        for (n, on) in &self.config {
            v.push(format!("--config {n}={}", if *on { "on" } else { "off" }));
        }
        for (n, on) in &self.safeguards {
            v.push(format!(
                "--safeguard {n}={}",
                if *on { "on" } else { "off" }
            ));
        }
        v.join(" ")
    }
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// `name`.
    pub name: String,
    /// `summary`.
    pub summary: String,
    /// Where it came from: a path, or `builtin:NAME`.
    pub source: String,
    /// `arch` (default `ipi`).
    pub arch: Arch,
    /// `SECTION_SIZE_BITS`.
    pub section_shift: u32,
    /// `[config]`: the kernel configuration (v6.18's Kconfig defaults with
    /// the file's changes).
    pub config: KernelConfig,
    /// The file's `[safeguards]`, in order.
    pub sg_overrides: Vec<(String, bool)>,
    /// The safeguards: v6.18's for the file's configuration
    /// ([`Safeguards::for_config`]) with the file's `[safeguards]`.
    pub safeguards: Safeguards,
    /// Physical memory, in layout order.
    pub memory: Vec<Memory>,
    /// Files (`[[file]]`).
    pub files: Vec<FileSpec>,
    /// Processes.
    pub processes: Vec<Process>,
    /// CPUs.
    pub cpus: Vec<CpuSpec>,
    /// `[expect]`, if the file says.
    pub expect: Option<Expect>,
}

impl Scenario {
    /// Whether teardown checks for leaks.
    pub fn check_leaks(&self) -> bool {
        self.expect.as_ref().is_none_or(|e| e.check_leaks)
    }

    /// The configuration and safeguards of a run with the file's settings
    /// changed by `config` and then `safeguards` (a variant's, or the
    /// command line's): the configuration first, since it decides
    /// safeguard defaults ([`Safeguards::for_config`]), then the file's
    /// `[safeguards]`, then `safeguards`.
    pub fn settings_with(
        &self,
        config: &[(String, bool)],
        safeguards: &[(String, bool)],
    ) -> Result<(KernelConfig, Safeguards), String> {
        let mut c = self.config;
        for (n, on) in config {
            c.set_by_name(n, *on)?;
        }
        let mut sg = Safeguards::for_config(&c);
        for (n, on) in self.sg_overrides.iter().chain(safeguards) {
            sg.set_by_name(n, *on)?;
        }
        Ok((c, sg))
    }

    /// The settings a variant runs with.
    pub fn variant_settings(&self, v: &Variant) -> (Arch, KernelConfig, Safeguards) {
        // Names were checked when the file was parsed.
        let (c, sg) = self
            .settings_with(&v.config, &v.safeguards)
            .unwrap_or((self.config, self.safeguards));
        (v.arch.unwrap_or(self.arch), c, sg)
    }

    /// What the file expects of a run with `arch`, `config` and `sg`:
    /// `[expect]` for the file's own settings, a `[[expect.variant]]` for the
    /// settings it names; `None` when the file says nothing about these
    /// settings.
    pub fn expected_for(
        &self,
        arch: Arch,
        config: &KernelConfig,
        sg: &Safeguards,
    ) -> Option<(&str, Option<&Variant>)> {
        let e = self.expect.as_ref()?;
        if arch == self.arch && *config == self.config && *sg == self.safeguards {
            return Some((e.violation.as_str(), None));
        }
        e.variants
            .iter()
            .find(|v| self.variant_settings(v) == (arch, *config, *sg))
            .map(|v| (v.violation.as_str(), Some(v)))
    }
}
