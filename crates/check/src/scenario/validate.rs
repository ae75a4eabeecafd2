//! From [`raw`] tables to a [`Scenario`]: names resolved, defaults filled in,
//! every error at the line and column that caused it.

use super::raw::{
    ArchName, BackingName, DevTypeName, MemKindName, MemStateName, ProtName, RawCpu, RawFile,
    RawMemory, RawOp, RawScenario, RawVma, Size, ZoneName,
};
use super::{
    Backing, CpuSpec, DevType, Expect, FRange, FileSpec, GupFn, Loc, MRange, MemKind, MemState,
    Memory, Op, OpKind, Process, Prot, Scenario, ScenarioError, URange, Variant, VmaSpec, Zone,
};
use mmsim_model::Arch;
use mmsim_model::KernelConfig;
use mmsim_model::detect::Kind;
use mmsim_model::mm::gup::{FOLL_FAST_ONLY, FOLL_FORCE, FOLL_LONGTERM, FOLL_WRITE};
use mmsim_model::safeguards::{REGISTRY, Safeguards};
use mmsim_model::types::PAGE_SIZE;
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;

/// The most CPUs a scenario may have (a replay string names each with one
/// letter).
pub const MAX_CPUS: usize = 52;

/// The model's default `SECTION_SIZE_BITS` (x86-64: 128 MiB).
const DEFAULT_SECTION_SHIFT: u32 = 27;

/// The largest `[[memory]]` range. The explorer boots a fresh machine for
/// every schedule, and its memmap costs about 64 bytes per 4K page: a 4G
/// range boots in some 70 ms, a 64G one in more than a second and 1.6 GB.
pub const MAX_RANGE_BYTES: u64 = 4 << 30;

/// The most memory all `[[memory]]` ranges together may have (see
/// [`MAX_RANGE_BYTES`]).
pub const MAX_TOTAL_BYTES: u64 = 8 << 30;

/// Parses and validates a scenario. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let v = Validator { text, file };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        v.err_at(at, e.message().trim_end().to_string())
    })?;
    v.scenario(raw)
}

/// Parses and validates a scenario given as bytes: a file that is not
/// UTF-8 is an error at the line and column of its first bad byte.
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Scenario, ScenarioError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, file),
        Err(e) => {
            let at = e.valid_up_to();
            // Everything before `at` is UTF-8, by from_utf8's contract.
            let text = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
            let v = Validator { text, file };
            Err(v.err_at(
                text.len(),
                format!(
                    "not UTF-8: byte {:#04x} at offset {at} (a scenario file is UTF-8 text)",
                    bytes[at]
                ),
            ))
        }
    }
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

type R<T> = Result<T, ScenarioError>;

/// Which fields each operation takes.
const OPS: &[(&str, &[&str])] = &[
    (
        "get_user_pages_fast",
        &["vma", "page", "pages", "flags", "as"],
    ),
    (
        "pin_user_pages_fast",
        &["vma", "page", "pages", "flags", "as"],
    ),
    ("get_user_pages", &["vma", "page", "pages", "flags", "as"]),
    ("pin_user_pages", &["vma", "page", "pages", "flags", "as"]),
    ("put_pages", &["ref"]),
    ("unpin_user_pages", &["ref"]),
    ("read", &["vma", "page"]),
    ("write", &["vma", "page", "value"]),
    ("fault", &["vma", "page", "write"]),
    (
        "mmap",
        &[
            "name", "pages", "size", "prot", "backing", "memory", "block", "populate", "thp",
            "file",
        ],
    ),
    ("munmap", &["vma", "page", "pages"]),
    ("madvise", &["vma", "page", "pages", "advice"]),
    ("mprotect", &["vma", "page", "pages", "prot"]),
    ("migrate_pages", &["vma", "page", "pages"]),
    ("add_memory", &["memory", "block"]),
    ("online_pages", &["memory", "block", "zone"]),
    ("offline_pages", &["memory", "block"]),
    ("remove_memory", &["memory", "block"]),
    ("offline_and_remove_memory", &["memory"]),
    ("memremap_pages", &["memory"]),
    ("memunmap_pages", &["memory"]),
    ("unmap_mapping_range", &["memory"]),
    ("pfn_valid", &["memory", "block"]),
    ("pfn_walk", &["memory", "block"]),
    ("compact", &["memory", "block"]),
    ("kpageflags", &["memory", "block"]),
    ("fork", &["as"]),
    ("split_folio", &["vma", "page"]),
    ("collapse", &["vma", "page"]),
    ("find_get_page", &["file", "page"]),
    ("evict", &["file", "page", "pages"]),
    ("truncate", &["file", "page", "pages"]),
    ("ksm_merge", &["vma", "page", "pages"]),
    ("ksm_scan", &[]),
    ("alloc_hugetlb", &["memory", "block", "as"]),
];

/// Pages of a HugeTLB folio (2 MiB).
const HUGETLB_PAGES: u64 = 512;

/// The largest `[[file]]`, in pages (256M).
const MAX_FILE_PAGES: u64 = 1 << 16;

/// Every operation name, for `mmsim list` and error messages.
pub fn op_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|(n, _)| *n)
}

/// Every operation with the fields it takes (generators of scenario files
/// walk this table, so a new operation is generated as soon as it is here).
pub fn op_fields() -> &'static [(&'static str, &'static [&'static str])] {
    OPS
}

impl<'a> Validator<'a> {
    fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        Loc { line, column }
    }

    fn err_at(&self, offset: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            loc: self.loc(offset),
            message: message.into(),
        }
    }

    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> R<T> {
        Err(self.err_at(span.start, message))
    }

    fn scenario(&self, raw: RawScenario) -> R<Scenario> {
        let name = raw.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return self.err(
                raw.name.span(),
                format!("scenario name `{name}` must be [a-z0-9-]+"),
            );
        }
        let arch = match raw.arch.as_ref().map(|a| *a.get_ref()) {
            None | Some(ArchName::Ipi) => Arch::Ipi,
            Some(ArchName::Broadcast) => Arch::Broadcast,
        };
        let section_shift = match &raw.section_size {
            None => DEFAULT_SECTION_SHIFT,
            Some(s) => {
                let bytes = self.size(s)?;
                if !bytes.is_power_of_two() || !((64 << 10)..=(128 << 20)).contains(&bytes) {
                    return self.err(
                        s.span(),
                        "section_size must be a power of two from 64K to 128M",
                    );
                }
                bytes.trailing_zeros()
            }
        };
        let mut config = KernelConfig::default();
        for (k, on) in self.config_switches(&raw.config)? {
            let _ = config.set_by_name(&k, on);
        }
        let mut sg_overrides = Vec::new();
        for (k, on) in raw.safeguards.iter().flatten() {
            self.safeguard_name(k)?;
            sg_overrides.push((k.get_ref().clone(), *on.get_ref()));
        }
        let mut safeguards = Safeguards::for_config(&config);
        for (k, on) in &sg_overrides {
            let _ = safeguards.set_by_name(k, *on);
        }
        let sec_bytes = 1u64 << section_shift;
        let mut memory: Vec<Memory> = Vec::new();
        for m in raw.memory {
            let span = m.span();
            let mem = self.memory(m.into_inner(), span, sec_bytes, &memory, &config)?;
            memory.push(mem);
        }
        match memory.iter().filter(|m| m.kind == MemKind::Boot).count() {
            0 => {
                return Err(ScenarioError {
                    file: self.file.to_string(),
                    loc: Loc { line: 1, column: 1 },
                    message: "no boot memory: add a [[memory]] with kind = \"boot\"".into(),
                });
            }
            1 => {}
            _ => {
                let second = memory
                    .iter()
                    .filter(|m| m.kind == MemKind::Boot)
                    .nth(1)
                    .map_or(Loc::default(), |m| m.loc);
                return Err(ScenarioError {
                    file: self.file.to_string(),
                    loc: second,
                    message: "a second boot range: the model has one".into(),
                });
            }
        }
        let block_pages = sec_bytes / PAGE_SIZE;
        let mut files: Vec<FileSpec> = Vec::new();
        for f in raw.file {
            let span = f.span();
            let spec = self.file(f.into_inner(), span, &memory, block_pages, &files)?;
            files.push(spec);
        }
        let mut ctx = Ctx {
            memory: &memory,
            files: &files,
            block_pages,
            created: HashMap::new(),
        };
        let mut processes: Vec<Process> = Vec::new();
        for p in raw.process {
            let p = p.into_inner();
            if processes.iter().any(|q| q.name == *p.name.get_ref()) {
                return self.err(
                    p.name.span(),
                    format!("a second process named `{}`", p.name.get_ref()),
                );
            }
            let mut proc = Process {
                name: p.name.into_inner(),
                vmas: Vec::new(),
                initial: 0,
                forked_from: None,
            };
            for v in p.vma {
                let span = v.span();
                let spec = self.vma(v.into_inner(), span, &ctx, &proc, false)?;
                proc.vmas.push(spec);
            }
            proc.initial = proc.vmas.len();
            processes.push(proc);
        }
        if raw.cpu.is_empty() {
            return Err(ScenarioError {
                file: self.file.to_string(),
                loc: Loc { line: 1, column: 1 },
                message: "no [[cpu]]: a scenario needs at least one CPU".into(),
            });
        }
        if raw.cpu.len() > MAX_CPUS {
            return self.err(
                raw.cpu[MAX_CPUS].span(),
                format!("more than {MAX_CPUS} CPUs"),
            );
        }
        // Pass 0: every process a fork creates (named by its `as`), so
        // that a [[cpu]] may run it.
        let declared = processes.len();
        let fork_ids = self.forks(&raw.cpu, &mut processes)?;
        // Pass 1: each CPU's process, and every VMA an mmap operation
        // creates (an operation may name a VMA that another CPU, or a later
        // operation, maps). The declared processes' first: a child
        // inherits every VMA name of its parent.
        let mut cpu_procs = Vec::new();
        for c in &raw.cpu {
            cpu_procs.push(self.cpu_process(c.get_ref(), &processes)?);
        }
        let mut mmap_ids: HashMap<(usize, usize), usize> = HashMap::new();
        let mut order: Vec<usize> = (0..raw.cpu.len()).collect();
        order.sort_by_key(|&ci| cpu_procs[ci].is_some_and(|p| p >= declared));
        let mut children_named = false;
        for ci in order {
            let c = &raw.cpu[ci];
            if !children_named && cpu_procs[ci].is_some_and(|p| p >= declared) {
                inherit_vmas(&mut processes, declared);
                children_named = true;
            }
            for (oi, o) in c.get_ref().ops.iter().enumerate() {
                let op = o.get_ref();
                if op.op.as_ref().map(|s| s.get_ref().as_str()) != Some("mmap") {
                    continue;
                }
                self.check_fields(op, o.span(), "mmap")?;
                let Some(pi) = cpu_procs[ci] else {
                    return self.err(o.span(), "mmap: this CPU runs no process");
                };
                if op.name.is_none() {
                    return self.err(o.span(), "`mmap` needs `name`: the new VMA's");
                }
                let spec = self.vma(mmap_fields(op), o.span(), &ctx, &processes[pi], true)?;
                processes[pi].vmas.push(spec);
                let vid = processes[pi].vmas.len() - 1;
                mmap_ids.insert((ci, oi), vid);
                ctx.created
                    .insert((pi, vid), (ci, oi, self.loc(o.span().start)));
            }
        }
        if !children_named {
            inherit_vmas(&mut processes, declared);
        }
        // Pass 2: every operation.
        let mut cpus = Vec::new();
        for (ci, c) in raw.cpu.into_iter().enumerate() {
            let span = c.span();
            let c = c.into_inner();
            let mut spec = CpuSpec {
                process: cpu_procs[ci],
                ops: Vec::new(),
                refs: Vec::new(),
                loc: self.loc(span.start),
            };
            let mut ref_kinds: Vec<(bool, bool)> = Vec::new(); // (pins, released)
            for (oi, o) in c.ops.into_iter().enumerate() {
                let span = o.span();
                let op = o.into_inner();
                if let Some(&child) = fork_ids.get(&(ci, oi)) {
                    spec.ops.push(Op {
                        name: "fork",
                        kind: OpKind::Fork { child },
                        loc: self.loc(span.start),
                    });
                    continue;
                }
                let proc = spec.process.map(|p| &processes[p]);
                let here = Here {
                    cpu: ci,
                    op: oi,
                    process: spec.process,
                    mmap_id: mmap_ids.get(&(ci, oi)).copied(),
                };
                let o = self.op(op, span, &ctx, proc, here, &mut spec.refs, &mut ref_kinds)?;
                spec.ops.push(o);
            }
            cpus.push(spec);
        }
        let expect = match raw.expect {
            None => None,
            Some(e) => {
                let e = e.into_inner();
                let v = &self.kind_name(&e.violation)?;
                let mut variants = Vec::new();
                for rv in e.variant {
                    let span = rv.span();
                    let rv = rv.into_inner();
                    let violation = self.kind_name(&rv.violation)?;
                    let mut safeguards = Vec::new();
                    for (k, on) in rv.safeguards.iter().flatten() {
                        self.safeguard_name(k)?;
                        safeguards.push((k.get_ref().clone(), *on.get_ref()));
                    }
                    let config = self.config_switches(&rv.config)?;
                    variants.push(Variant {
                        config,
                        arch: rv.arch.map(|a| match a.into_inner() {
                            ArchName::Ipi => Arch::Ipi,
                            ArchName::Broadcast => Arch::Broadcast,
                        }),
                        safeguards,
                        violation,
                        iterations: self.iterations(&rv.iterations)?,
                        loc: self.loc(span.start),
                    });
                }
                Some(Expect {
                    violation: v.clone(),
                    check_leaks: e.check_leaks.unwrap_or(true),
                    finding: e.finding.unwrap_or(false),
                    iterations: self.iterations(&e.iterations)?,
                    depth: match &e.depth {
                        Some(d) if !(1..=32).contains(d.get_ref()) => {
                            return self.err(d.span(), "depth (PCT's bug depth) is from 1 to 32");
                        }
                        d => d.as_ref().map(|d| *d.get_ref() as usize),
                    },
                    variants,
                })
            }
        };
        let sc = Scenario {
            name: raw.name.into_inner(),
            summary: raw.summary.unwrap_or_default(),
            source: self.file.to_string(),
            arch,
            section_shift,
            config,
            sg_overrides,
            safeguards,
            memory,
            files,
            processes,
            cpus,
            expect,
        };
        self.check_variants(&sc)?;
        Ok(sc)
    }

    /// Every variant names settings of its own: not the file's (which
    /// `[expect]` describes) and not another variant's.
    fn check_variants(&self, sc: &Scenario) -> R<()> {
        let variants = sc.expect.as_ref().map_or(&[][..], |e| &e.variants[..]);
        let own = (sc.arch, sc.config, sc.safeguards);
        for (i, v) in variants.iter().enumerate() {
            let mine = sc.variant_settings(v);
            let message = if mine == own {
                "this variant's settings are the file's own, whose outcome [expect] states"
                    .to_string()
            } else if let Some(w) = variants[..i]
                .iter()
                .find(|w| sc.variant_settings(w) == mine)
            {
                format!(
                    "this variant's settings are those of the variant at line {}",
                    w.loc.line
                )
            } else {
                continue;
            };
            return Err(ScenarioError {
                file: self.file.to_string(),
                loc: v.loc,
                message,
            });
        }
        Ok(())
    }

    /// A `[config]` table: every name must be a configuration option.
    fn config_switches(
        &self,
        t: &Option<std::collections::BTreeMap<Spanned<String>, Spanned<bool>>>,
    ) -> R<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for (k, on) in t.iter().flatten() {
            if mmsim_model::config::lookup(k.get_ref()).is_none() {
                let known: Vec<_> = mmsim_model::config::REGISTRY
                    .iter()
                    .map(|i| i.name)
                    .collect();
                return self.err(
                    k.span(),
                    format!(
                        "unknown configuration option `{}` (known: {})",
                        k.get_ref(),
                        known.join(", ")
                    ),
                );
            }
            out.push((k.get_ref().clone(), *on.get_ref()));
        }
        Ok(out)
    }

    fn kind_name(&self, v: &Spanned<String>) -> R<String> {
        let name = v.get_ref();
        if name != "none" && Kind::from_name(name).is_none() {
            let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
            return self.err(
                v.span(),
                format!(
                    "unknown violation kind `{name}` (expected \"none\" or one of: {})",
                    kinds.join(", ")
                ),
            );
        }
        Ok(name.clone())
    }

    fn safeguard_name(&self, k: &Spanned<String>) -> R<()> {
        if mmsim_model::safeguards::lookup(k.get_ref()).is_none() {
            let known: Vec<_> = REGISTRY.iter().map(|i| i.name).collect();
            return self.err(
                k.span(),
                format!(
                    "unknown safeguard `{}` (known: {})",
                    k.get_ref(),
                    known.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn iterations(&self, n: &Option<Spanned<u64>>) -> R<Option<u64>> {
        match n {
            Some(n) if *n.get_ref() == 0 => self.err(n.span(), "iterations must be at least 1"),
            Some(n) => Ok(Some(*n.get_ref())),
            None => Ok(None),
        }
    }

    fn size(&self, s: &Spanned<Size>) -> R<u64> {
        let bad = || {
            self.err(
                s.span(),
                "a size is a number with an optional K, M or G suffix, e.g. \"2M\"",
            )
        };
        let v = match s.get_ref() {
            Size::Bytes(b) => Some(*b),
            Size::Text(t) => {
                let t = t.trim();
                let (num, shift) = match t.char_indices().last() {
                    Some((i, 'K' | 'k')) => (&t[..i], 10),
                    Some((i, 'M' | 'm')) => (&t[..i], 20),
                    Some((i, 'G' | 'g')) => (&t[..i], 30),
                    _ => (t, 0),
                };
                num.trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(1 << shift))
            }
        };
        match v {
            Some(0) => self.err(s.span(), "a size must not be zero"),
            Some(v) => Ok(v),
            None => bad(),
        }
    }

    fn memory(
        &self,
        m: RawMemory,
        span: Range<usize>,
        sec_bytes: u64,
        sofar: &[Memory],
        config: &KernelConfig,
    ) -> R<Memory> {
        let name = m.name.get_ref();
        if name.is_empty() {
            return self.err(m.name.span(), "a memory range needs a name");
        }
        if sofar.iter().any(|o| o.name == *name) {
            return self.err(
                m.name.span(),
                format!("a second memory range named `{name}`"),
            );
        }
        let bytes = self.size(&m.size)?;
        if bytes > MAX_RANGE_BYTES {
            return self.err(
                m.size.span(),
                format!(
                    "memory `{name}`: {} is more than a range may have ({}): the explorer boots a fresh machine for every schedule",
                    human(bytes),
                    human(MAX_RANGE_BYTES)
                ),
            );
        }
        let total: u64 = sofar.iter().map(|o| o.bytes).sum::<u64>() + bytes;
        if total > MAX_TOTAL_BYTES {
            return self.err(
                m.size.span(),
                format!(
                    "memory `{name}` brings the ranges to {}, more than all together may have ({})",
                    human(total),
                    human(MAX_TOTAL_BYTES)
                ),
            );
        }
        if bytes % sec_bytes != 0 {
            return self.err(
                m.size.span(),
                format!(
                    "memory `{name}`: {} is not a whole number of {} sections (see section_size)",
                    human(bytes),
                    human(sec_bytes)
                ),
            );
        }
        let kind = match m.kind.get_ref() {
            MemKindName::Boot => MemKind::Boot,
            MemKindName::Hotplug => MemKind::Hotplug,
            MemKindName::Device => MemKind::Device,
        };
        let state = match (kind, &m.state) {
            (MemKind::Boot, None) => MemState::Boot,
            (MemKind::Boot, Some(s)) => {
                return self.err(
                    s.span(),
                    "boot memory has no `state`: it is online from the start",
                );
            }
            (_, None) => {
                return self.err(
                    span,
                    format!(
                        "memory `{name}`: {} memory needs a `state` ({})",
                        kind.name(),
                        if kind == MemKind::Hotplug {
                            "absent, offline or online"
                        } else {
                            "absent or mapped"
                        }
                    ),
                );
            }
            (MemKind::Hotplug, Some(s)) => match s.get_ref() {
                MemStateName::Absent => MemState::Absent,
                MemStateName::Offline => MemState::Offline,
                MemStateName::Online => MemState::Online,
                MemStateName::Mapped => {
                    return self.err(
                        s.span(),
                        "hotplug memory is absent, offline or online (`mapped` is for device memory)",
                    );
                }
            },
            (MemKind::Device, Some(s)) => match s.get_ref() {
                MemStateName::Absent => MemState::Absent,
                MemStateName::Mapped => MemState::Mapped,
                _ => {
                    return self.err(s.span(), "device memory is absent or mapped");
                }
            },
        };
        let zone = match (&m.zone, kind) {
            (None, _) => Zone::Movable,
            (Some(z), MemKind::Hotplug) => match z.get_ref() {
                ZoneName::Movable => Zone::Movable,
                ZoneName::Normal => Zone::Normal,
            },
            (Some(z), _) => {
                return self.err(z.span(), "`zone` applies to hotplug memory only");
            }
        };
        let dev_type = match (&m.dev_type, kind) {
            (None, _) => DevType::Generic,
            (Some(t), MemKind::Device) => match t.get_ref() {
                DevTypeName::Generic => DevType::Generic,
                DevTypeName::Fsdax => DevType::Fsdax,
                DevTypeName::Coherent => DevType::Coherent,
                DevTypeName::Private => DevType::Private,
            },
            (Some(t), _) => {
                return self.err(t.span(), "`type` applies to device memory only");
            }
        };
        let node = match &m.node {
            None => 0,
            Some(n) if *n.get_ref() > 0 && !config.numa => {
                return self.err(
                    n.span(),
                    format!(
                        "memory `{name}`: node {} needs numa (without CONFIG_NUMA there is only node 0)",
                        n.get_ref()
                    ),
                );
            }
            Some(n) if *n.get_ref() >= mmsim_model::mm::mmzone::MAX_NUMNODES => {
                return self.err(
                    n.span(),
                    format!(
                        "memory `{name}`: node {} is out of range (0 to {})",
                        n.get_ref(),
                        mmsim_model::mm::mmzone::MAX_NUMNODES - 1
                    ),
                );
            }
            Some(n) => *n.get_ref(),
        };
        Ok(Memory {
            name: m.name.into_inner(),
            kind,
            bytes,
            state,
            zone,
            dev_type,
            node,
            loc: self.loc(span.start),
        })
    }

    fn memory_ref(&self, ctx: &Ctx<'_>, name: &Spanned<String>) -> R<usize> {
        ctx.memory
            .iter()
            .position(|m| m.name == *name.get_ref())
            .ok_or_else(|| {
                let known: Vec<_> = ctx.memory.iter().map(|m| m.name.as_str()).collect();
                self.err_at(
                    name.span().start,
                    format!(
                        "unknown memory `{}` (defined: {})",
                        name.get_ref(),
                        known.join(", ")
                    ),
                )
            })
    }

    fn block(&self, ctx: &Ctx<'_>, mem: usize, b: &Spanned<u64>) -> R<u64> {
        let blocks = ctx.memory[mem].bytes / PAGE_SIZE / ctx.block_pages;
        if *b.get_ref() >= blocks {
            return self.err(
                b.span(),
                format!(
                    "memory `{}` has {blocks} block{} (0-based)",
                    ctx.memory[mem].name,
                    if blocks == 1 { "" } else { "s" }
                ),
            );
        }
        Ok(*b.get_ref())
    }

    fn vma(
        &self,
        v: RawVma,
        span: Range<usize>,
        ctx: &Ctx<'_>,
        proc: &Process,
        in_op: bool,
    ) -> R<VmaSpec> {
        let name = v.name.get_ref();
        if name.is_empty() {
            return self.err(v.name.span(), "a VMA needs a name");
        }
        if proc.vmas.iter().any(|o| o.name == *name) {
            return self.err(
                v.name.span(),
                format!("a second VMA named `{name}` in process `{}`", proc.name),
            );
        }
        let pages = match (&v.pages, &v.size) {
            (Some(_), Some(s)) => {
                return self.err(s.span(), "give `pages` or `size`, not both");
            }
            (None, None) => {
                return self.err(span, format!("VMA `{name}` needs `pages` or `size`"));
            }
            (Some(p), None) => {
                if *p.get_ref() == 0 {
                    return self.err(p.span(), "a VMA has at least one page");
                }
                *p.get_ref()
            }
            (None, Some(s)) => {
                let b = self.size(s)?;
                if b % PAGE_SIZE != 0 {
                    return self.err(s.span(), "a VMA's size is a whole number of 4K pages");
                }
                b / PAGE_SIZE
            }
        };
        if pages > 1 << 24 {
            return self.err(span, "a VMA of more than 64G: the model would not fit");
        }
        let prot = match v.prot.as_ref().map(|p| *p.get_ref()) {
            None | Some(ProtName::Rw) => Prot::ReadWrite,
            Some(ProtName::R) => Prot::Read,
            Some(ProtName::None) => Prot::None,
        };
        let backing = match v.backing.as_ref().map(|b| *b.get_ref()) {
            None | Some(BackingName::Anon) => Backing::Anon,
            Some(BackingName::Shared) => Backing::Shared,
            Some(BackingName::Device) => Backing::Device,
            Some(BackingName::Pfnmap) => Backing::Pfnmap,
            Some(BackingName::File) => Backing::File,
        };
        let file = match (&v.file, backing) {
            (None, Backing::File) => {
                return self.err(
                    span,
                    format!(
                        "VMA `{name}` has backing = \"file\" and needs `file`: the [[file]] it maps"
                    ),
                );
            }
            (Some(f), Backing::File) => Some(self.file_ref(ctx, f)?),
            (Some(f), _) => {
                return self.err(
                    f.span(),
                    format!(
                        "`file` applies to backing = \"file\" (this VMA is {})",
                        backing.name()
                    ),
                );
            }
            (None, _) => None,
        };
        if let Some(fi) = file {
            let f = &ctx.files[fi];
            if let Some(m) = &v.memory {
                return self.err(
                    m.span(),
                    format!(
                        "a file VMA maps file `{}`'s page cache: place its pages with the [[file]]'s `memory`",
                        f.name
                    ),
                );
            }
            if pages > f.pages {
                return self.err(
                    span,
                    format!(
                        "VMA `{name}` maps {pages} pages of file `{}`, which has {}",
                        f.name, f.pages
                    ),
                );
            }
        }
        let memory = match &v.memory {
            None => None,
            Some(m) => Some((self.memory_ref(ctx, m)?, m.span().start)),
        };
        let block = match (&v.block, memory) {
            (None, _) => None,
            (Some(b), None) => return self.err(b.span(), "`block` needs `memory`"),
            (Some(b), Some((mi, _))) => Some(self.block(ctx, mi, b)?),
        };
        let populate = v.populate.unwrap_or(false);
        match (backing, memory) {
            (Backing::Device | Backing::Pfnmap, None) => {
                return self.err(
                    span,
                    format!("a {} VMA needs `memory`: the range it maps", backing.name()),
                );
            }
            (Backing::Device, Some((mi, s))) if ctx.memory[mi].kind != MemKind::Device => {
                return self.err(
                    s..s,
                    format!("memory `{}` is not device memory", ctx.memory[mi].name),
                );
            }
            (Backing::Anon | Backing::Shared, Some((mi, s))) => {
                if ctx.memory[mi].kind == MemKind::Device {
                    return self.err(
                        s..s,
                        format!(
                            "{} pages cannot come from device memory `{}` (use backing = \"device\")",
                            backing.name(),
                            ctx.memory[mi].name
                        ),
                    );
                }
                if in_op {
                    return self.err(
                        s..s,
                        "an mmap operation's anon or shared pages come from wherever the allocator gives them; place pages with a [[process.vma]]",
                    );
                }
                if !populate {
                    return self.err(
                        s..s,
                        "`memory` places the pages that populate faults in: add populate = true (later faults take pages wherever the allocator gives them)",
                    );
                }
                let mem = &ctx.memory[mi];
                if !matches!(mem.state, MemState::Boot | MemState::Online) {
                    return self.err(
                        s..s,
                        format!(
                            "VMA `{name}` places its pages in memory `{}`, which is {} at start: pages can be placed only in online memory (state = \"online\")",
                            mem.name,
                            mem.state.name()
                        ),
                    );
                }
                if mem.kind == MemKind::Hotplug && mem.zone == Zone::Normal {
                    // Set-up places pages by holding every other block the
                    // allocator could take; in ZONE_NORMAL that sends the
                    // VMA's page tables there too, and the model keeps page
                    // tables in boot memory.
                    return self.err(
                        s..s,
                        format!(
                            "VMA `{name}` places its pages in memory `{}`, which is onlined to ZONE_NORMAL: the model places pages only in boot memory and ZONE_MOVABLE (its page tables live in boot memory)",
                            mem.name
                        ),
                    );
                }
            }
            (Backing::Device, Some((mi, s))) if populate => {
                let mem = &ctx.memory[mi];
                if mem.state != MemState::Mapped {
                    return self.err(
                        s..s,
                        format!(
                            "VMA `{name}` is populated from device memory `{}`, which is {} at start: populate needs state = \"mapped\"",
                            mem.name,
                            mem.state.name()
                        ),
                    );
                }
                if mem.dev_type == DevType::Private {
                    return self.err(
                        s..s,
                        format!(
                            "device memory `{}` is private: its pages are reached only through device-private swap entries, never mapped, so a VMA cannot be populated from it",
                            mem.name
                        ),
                    );
                }
            }
            (Backing::Pfnmap, Some(_)) if populate => {
                return self.err(
                    span,
                    "populate does not apply to a pfnmap VMA: remap_pfn_range() maps every frame at mmap",
                );
            }
            _ => {}
        }
        if let (Backing::Device | Backing::Pfnmap, Some((mi, s))) = (backing, memory) {
            let first = block.unwrap_or(0) * ctx.block_pages;
            let total = ctx.memory[mi].bytes / PAGE_SIZE;
            if first + pages > total {
                return self.err(
                    s..s,
                    format!(
                        "VMA `{name}` maps {pages} pages from page {first} of memory `{}`, which has {total}",
                        ctx.memory[mi].name
                    ),
                );
            }
        }
        if populate && prot == Prot::None {
            return self.err(span, "populate needs prot = \"r\" or \"rw\"");
        }
        let thp = v.thp.unwrap_or(false);
        if thp && !matches!(backing, Backing::Anon | Backing::File) {
            return self.err(
                span,
                "thp applies to anon mappings (THP faults) and file mappings (PMD-aligned, for collapse)",
            );
        }
        Ok(VmaSpec {
            name: v.name.into_inner(),
            pages,
            prot,
            backing,
            memory: memory.map(|(m, _)| m),
            block,
            populate,
            thp,
            file,
            loc: self.loc(span.start),
        })
    }

    fn file_ref(&self, ctx: &Ctx<'_>, name: &Spanned<String>) -> R<usize> {
        ctx.files
            .iter()
            .position(|f| f.name == *name.get_ref())
            .ok_or_else(|| {
                let known: Vec<_> = ctx.files.iter().map(|f| f.name.as_str()).collect();
                self.err_at(
                    name.span().start,
                    format!(
                        "unknown file `{}` (defined: {})",
                        name.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
    }

    /// A `[[file]]`.
    fn file(
        &self,
        f: RawFile,
        span: Range<usize>,
        memory: &[Memory],
        block_pages: u64,
        files: &[FileSpec],
    ) -> R<FileSpec> {
        let name = f.name.get_ref();
        if name.is_empty() {
            return self.err(f.name.span(), "a file needs a name");
        }
        if files.iter().any(|o| o.name == *name) {
            return self.err(f.name.span(), format!("a second file named `{name}`"));
        }
        let pages = match (&f.pages, &f.size) {
            (Some(_), Some(s)) => return self.err(s.span(), "give `pages` or `size`, not both"),
            (None, None) => {
                return self.err(span, format!("file `{name}` needs `pages` or `size`"));
            }
            (Some(p), None) => {
                if *p.get_ref() == 0 {
                    return self.err(p.span(), "a file has at least one page");
                }
                *p.get_ref()
            }
            (None, Some(s)) => {
                let b = self.size(s)?;
                if b == 0 || b % PAGE_SIZE != 0 {
                    return self.err(s.span(), "a file's size is a whole number of 4K pages");
                }
                b / PAGE_SIZE
            }
        };
        if pages > MAX_FILE_PAGES {
            return self.err(
                span,
                format!("file `{name}` has {pages} pages: the model takes at most {MAX_FILE_PAGES} (256M)"),
            );
        }
        let cached = f.cached.as_ref().is_none_or(|c| *c.get_ref());
        let mem = match &f.memory {
            None => None,
            Some(m) => {
                let Some(mi) = memory.iter().position(|x| x.name == *m.get_ref()) else {
                    let known: Vec<_> = memory.iter().map(|x| x.name.as_str()).collect();
                    return self.err(
                        m.span(),
                        format!(
                            "unknown memory `{}` (defined: {})",
                            m.get_ref(),
                            known.join(", ")
                        ),
                    );
                };
                let mr = &memory[mi];
                if mr.kind == MemKind::Device {
                    return self.err(
                        m.span(),
                        format!(
                            "page-cache folios cannot live in device memory `{}`",
                            mr.name
                        ),
                    );
                }
                if !cached {
                    return self.err(
                        m.span(),
                        "`memory` places the folios cached at start: it needs cached = true",
                    );
                }
                if !matches!(mr.state, MemState::Boot | MemState::Online) {
                    return self.err(
                        m.span(),
                        format!(
                            "file `{name}` places its cached folios in memory `{}`, which is {} at start: they can be placed only in online memory",
                            mr.name,
                            mr.state.name()
                        ),
                    );
                }
                if mr.kind == MemKind::Hotplug && mr.zone == Zone::Normal {
                    return self.err(
                        m.span(),
                        format!(
                            "file `{name}` places its folios in memory `{}`, which is onlined to ZONE_NORMAL: the model places pages only in boot memory and ZONE_MOVABLE",
                            mr.name
                        ),
                    );
                }
                Some(mi)
            }
        };
        let block = match (&f.block, mem) {
            (None, _) => None,
            (Some(b), None) => return self.err(b.span(), "`block` needs `memory`"),
            (Some(b), Some(mi)) => {
                let blocks = memory[mi].bytes / PAGE_SIZE / block_pages;
                if *b.get_ref() >= blocks {
                    return self.err(
                        b.span(),
                        format!(
                            "memory `{}` has {blocks} block{} (0-based)",
                            memory[mi].name,
                            if blocks == 1 { "" } else { "s" }
                        ),
                    );
                }
                Some(*b.get_ref())
            }
        };
        if let Some(mi) = mem {
            let room = match block {
                Some(_) => block_pages,
                None => memory[mi].bytes / PAGE_SIZE,
            };
            if pages > room {
                return self.err(
                    span,
                    format!(
                        "file `{name}` caches {pages} pages in memory `{}`{}, which has {room}",
                        memory[mi].name,
                        block.map_or(String::new(), |b| format!(" block {b}"))
                    ),
                );
            }
        }
        Ok(FileSpec {
            name: f.name.into_inner(),
            pages,
            memory: mem,
            block,
            cached,
            shmem: f.shmem.as_ref().is_some_and(|s| *s.get_ref()),
            loc: self.loc(span.start),
        })
    }

    /// The processes `fork` operations create, appended to `processes`
    /// (their VMA names come later, [`inherit_vmas`]); by (CPU, operation),
    /// the child each fork creates. Only a declared process forks here.
    fn forks(
        &self,
        cpus: &[Spanned<RawCpu>],
        processes: &mut Vec<Process>,
    ) -> R<HashMap<(usize, usize), usize>> {
        let declared = processes.len();
        let mut ids = HashMap::new();
        for (ci, c) in cpus.iter().enumerate() {
            for (oi, o) in c.get_ref().ops.iter().enumerate() {
                let op = o.get_ref();
                if op.op.as_ref().map(|s| s.get_ref().as_str()) != Some("fork") {
                    continue;
                }
                self.check_fields(op, o.span(), "fork")?;
                let Some(name) = &op.as_ else {
                    return self.err(o.span(), "`fork` needs `as`: the child process's name");
                };
                let parent = match &c.get_ref().process {
                    None if declared > 0 => 0,
                    None => return self.err(o.span(), "fork: this CPU runs no process"),
                    Some(p) => match processes[..declared]
                        .iter()
                        .position(|q| q.name == *p.get_ref())
                    {
                        Some(i) => i,
                        None => {
                            return self.err(
                                o.span(),
                                "fork: only a [[process]] forks in this build, not a forked one",
                            );
                        }
                    },
                };
                if processes.iter().any(|q| q.name == *name.get_ref()) {
                    return self.err(
                        name.span(),
                        format!("a second process named `{}`", name.get_ref()),
                    );
                }
                processes.push(Process {
                    name: name.get_ref().clone(),
                    vmas: Vec::new(),
                    initial: 0,
                    forked_from: Some(parent),
                });
                ids.insert((ci, oi), processes.len() - 1);
            }
        }
        Ok(ids)
    }

    fn cpu_process(&self, c: &RawCpu, processes: &[Process]) -> R<Option<usize>> {
        match &c.process {
            None => Ok(if processes.is_empty() { None } else { Some(0) }),
            Some(p) => match processes.iter().position(|q| q.name == *p.get_ref()) {
                Some(i) => Ok(Some(i)),
                None => {
                    let known: Vec<_> = processes.iter().map(|q| q.name.as_str()).collect();
                    self.err(
                        p.span(),
                        format!(
                            "unknown process `{}` (defined: {})",
                            p.get_ref(),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                }
            },
        }
    }

    /// Every field an operation table has, with its position.
    fn present(op: &RawOp) -> Vec<(&'static str, usize)> {
        let mut v = Vec::new();
        macro_rules! f {
            ($field:ident, $name:expr) => {
                if let Some(x) = &op.$field {
                    v.push(($name, x.span().start));
                }
            };
        }
        f!(vma, "vma");
        f!(page, "page");
        f!(pages, "pages");
        f!(flags, "flags");
        f!(as_, "as");
        f!(ref_, "ref");
        f!(value, "value");
        f!(write, "write");
        f!(name, "name");
        f!(size, "size");
        f!(prot, "prot");
        f!(backing, "backing");
        f!(memory, "memory");
        f!(block, "block");
        f!(populate, "populate");
        f!(thp, "thp");
        f!(advice, "advice");
        f!(zone, "zone");
        f!(file, "file");
        v
    }

    fn check_fields(&self, op: &RawOp, span: Range<usize>, name: &str) -> R<&'static str> {
        let Some((name, fields)) = OPS.iter().find(|(n, _)| *n == name) else {
            return self.err(span, format!("unknown operation `{name}`"));
        };
        for (f, at) in Self::present(op) {
            if !fields.contains(&f) {
                return Err(self.err_at(
                    at,
                    if fields.is_empty() {
                        format!("operation `{name}` takes no fields (`{f}` given)")
                    } else {
                        format!(
                            "operation `{name}` takes no `{f}` (its fields: {})",
                            fields.join(", ")
                        )
                    },
                ));
            }
        }
        Ok(name)
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        op: RawOp,
        span: Range<usize>,
        ctx: &Ctx<'_>,
        proc: Option<&Process>,
        here: Here,
        refs: &mut Vec<String>,
        ref_kinds: &mut Vec<(bool, bool)>,
    ) -> R<Op> {
        let Some(opname) = &op.op else {
            return self.err(
                span,
                format!(
                    "an operation needs `op` (one of: {})",
                    op_names().collect::<Vec<_>>().join(", ")
                ),
            );
        };
        let known = OPS.iter().any(|(n, _)| *n == opname.get_ref());
        if !known {
            return self.err(
                opname.span(),
                format!(
                    "unknown operation `{}` (known: {})",
                    opname.get_ref(),
                    op_names().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let name = self.check_fields(&op, opname.span(), opname.get_ref())?;
        let loc = self.loc(span.start);
        let need_proc = || -> R<&Process> {
            proc.ok_or_else(|| {
                self.err_at(
                    span.start,
                    format!("`{name}` needs a process: this scenario has no [[process]]"),
                )
            })
        };
        let vma_of = |v: &Option<Spanned<String>>| -> R<(usize, &VmaSpec)> {
            let p = need_proc()?;
            let Some(v) = v else {
                return self.err(span.clone(), format!("`{name}` needs `vma`"));
            };
            match p.vmas.iter().position(|x| x.name == *v.get_ref()) {
                Some(i) => {
                    // A VMA an mmap operation creates has an address only
                    // once that mmap returns, and only its CPU learns it:
                    // the format has no way to hand it to another CPU.
                    let created = here.process.and_then(|pi| ctx.created.get(&(pi, i)));
                    if let Some(&(c, o, at)) = created {
                        if c != here.cpu {
                            return self.err(
                                v.span(),
                                format!(
                                    "vma `{}` is created by the mmap of cpu{c} (line {}): only that CPU's later operations can know its address",
                                    v.get_ref(),
                                    at.line
                                ),
                            );
                        }
                        if o >= here.op {
                            return self.err(
                                v.span(),
                                format!(
                                    "vma `{}` does not exist yet: this CPU's mmap at line {} creates it",
                                    v.get_ref(),
                                    at.line
                                ),
                            );
                        }
                    }
                    Ok((i, &p.vmas[i]))
                }
                None => {
                    let known: Vec<_> = p.vmas.iter().map(|x| x.name.as_str()).collect();
                    self.err(
                        v.span(),
                        format!(
                            "unknown vma `{}` in process `{}` (defined: {})",
                            v.get_ref(),
                            p.name,
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                }
            }
        };
        let page_of = |spec: &VmaSpec| -> R<u64> {
            match &op.page {
                None => Ok(0),
                Some(p) if *p.get_ref() < spec.pages => Ok(*p.get_ref()),
                Some(p) => self.err(
                    p.span(),
                    format!(
                        "page {} is outside vma `{}` ({} page{})",
                        p.get_ref(),
                        spec.name,
                        spec.pages,
                        if spec.pages == 1 { "" } else { "s" }
                    ),
                ),
            }
        };
        let urange = || -> R<URange> {
            let (vma, spec) = vma_of(&op.vma)?;
            let page = page_of(spec)?;
            let pages = match &op.pages {
                None => spec.pages - page,
                Some(p) => {
                    let n = *p.get_ref();
                    if n == 0 || page + n > spec.pages {
                        return self.err(
                            p.span(),
                            format!(
                                "pages {page}..{} are not all inside vma `{}` ({} pages)",
                                page.saturating_add(n),
                                spec.name,
                                spec.pages
                            ),
                        );
                    }
                    n
                }
            };
            Ok(URange { vma, page, pages })
        };
        let mrange = |kinds: &[MemKind]| -> R<MRange> {
            let Some(m) = &op.memory else {
                return self.err(span.clone(), format!("`{name}` needs `memory`"));
            };
            let mi = self.memory_ref(ctx, m)?;
            let mem = &ctx.memory[mi];
            if !kinds.contains(&mem.kind) {
                return self.err(
                    m.span(),
                    format!(
                        "`{name}` works on {} memory; `{}` is {} memory",
                        kinds
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(" or "),
                        mem.name,
                        mem.kind.name()
                    ),
                );
            }
            let block = match &op.block {
                None => None,
                Some(b) => Some(self.block(ctx, mi, b)?),
            };
            Ok(MRange { memory: mi, block })
        };
        let kind = match name {
            "get_user_pages_fast" | "pin_user_pages_fast" | "get_user_pages" | "pin_user_pages" => {
                let func = match name {
                    "get_user_pages_fast" => GupFn::GetUserPagesFast,
                    "pin_user_pages_fast" => GupFn::PinUserPagesFast,
                    "get_user_pages" => GupFn::GetUserPages,
                    _ => GupFn::PinUserPages,
                };
                let range = urange()?;
                let mut flags = 0;
                for f in op.flags.iter().flat_map(|l| l.get_ref().iter()) {
                    let bit = match f.get_ref().as_str() {
                        "write" => FOLL_WRITE,
                        "longterm" => FOLL_LONGTERM,
                        "fast_only" => FOLL_FAST_ONLY,
                        "force" => FOLL_FORCE,
                        other => {
                            return self.err(
                                f.span(),
                                format!(
                                    "unknown flag `{other}` (known: write, longterm, fast_only, force)"
                                ),
                            );
                        }
                    };
                    if flags & bit != 0 {
                        return self.err(f.span(), format!("flag `{}` given twice", f.get_ref()));
                    }
                    flags |= bit;
                }
                if flags & FOLL_LONGTERM != 0 && !func.pins() {
                    return self.err(
                        span,
                        "`longterm` needs a pin (FOLL_LONGTERM is for pin_user_pages*)",
                    );
                }
                let as_ = match &op.as_ {
                    None => None,
                    Some(a) => {
                        if refs.contains(a.get_ref()) {
                            return self.err(
                                a.span(),
                                format!("a second reference named `{}` on this CPU", a.get_ref()),
                            );
                        }
                        refs.push(a.get_ref().clone());
                        ref_kinds.push((func.pins(), false));
                        Some(refs.len() - 1)
                    }
                };
                OpKind::Gup {
                    func,
                    range,
                    flags,
                    as_,
                }
            }
            "put_pages" | "unpin_user_pages" => {
                let Some(r) = &op.ref_ else {
                    return self.err(span, format!("`{name}` needs `ref`"));
                };
                let Some(i) = refs.iter().position(|x| x == r.get_ref()) else {
                    return self.err(
                        r.span(),
                        format!(
                            "unknown ref `{}`: name a reference with `as` in an earlier operation of this CPU",
                            r.get_ref()
                        ),
                    );
                };
                let (pins, released) = ref_kinds[i];
                let unpin = name == "unpin_user_pages";
                if pins != unpin {
                    return self.err(
                        r.span(),
                        if pins {
                            format!(
                                "`{}` holds pins (FOLL_PIN): drop it with unpin_user_pages",
                                r.get_ref()
                            )
                        } else {
                            format!(
                                "`{}` holds references (FOLL_GET): drop it with put_pages",
                                r.get_ref()
                            )
                        },
                    );
                }
                if released {
                    return self.err(r.span(), format!("`{}` was already dropped", r.get_ref()));
                }
                ref_kinds[i].1 = true;
                if unpin {
                    OpKind::UnpinUserPages { ref_: i }
                } else {
                    OpKind::PutPages { ref_: i }
                }
            }
            "read" | "write" | "fault" => {
                let (vma, spec) = vma_of(&op.vma)?;
                let page = page_of(spec)?;
                match name {
                    "read" => OpKind::Read { vma, page },
                    "write" => OpKind::Write {
                        vma,
                        page,
                        value: op.value.as_ref().map_or(1, |v| *v.get_ref()),
                    },
                    _ => OpKind::Fault {
                        vma,
                        page,
                        write: op.write.as_ref().is_some_and(|w| *w.get_ref()),
                    },
                }
            }
            "split_folio" | "collapse" => {
                let (vma, spec) = vma_of(&op.vma)?;
                let page = page_of(spec)?;
                if name == "collapse" {
                    OpKind::Collapse { vma, page }
                } else {
                    OpKind::SplitFolio { vma, page }
                }
            }
            "mmap" => {
                // Resolved in pass 1.
                let Some(vma) = here.mmap_id else {
                    return self.err(span, "mmap: internal error (not resolved)");
                };
                OpKind::Mmap { vma }
            }
            "munmap" => OpKind::Munmap { range: urange()? },
            "madvise" => {
                let range = urange()?;
                use mmsim_model::mm::mmap::Advice;
                let known = "\"dontneed\", \"cold\", \"pageout\", \"free\"";
                let advice = match &op.advice {
                    None => return self.err(span, format!("`madvise` needs `advice` ({known})")),
                    Some(a) => match a.get_ref().as_str() {
                        "dontneed" => None,
                        "cold" => Some(Advice::Cold),
                        "pageout" => Some(Advice::Pageout),
                        "free" => Some(Advice::Free),
                        other => {
                            return self.err(
                                a.span(),
                                format!("unknown advice `{other}` (the model has {known})"),
                            );
                        }
                    },
                };
                match advice {
                    None => OpKind::MadviseDontneed { range },
                    Some(advice) => OpKind::Madvise { range, advice },
                }
            }
            "mprotect" => {
                let range = urange()?;
                let Some(p) = &op.prot else {
                    return self.err(span, "`mprotect` needs `prot`");
                };
                let prot = match p.get_ref() {
                    ProtName::None => Prot::None,
                    ProtName::R => Prot::Read,
                    ProtName::Rw => Prot::ReadWrite,
                };
                OpKind::Mprotect { range, prot }
            }
            "migrate_pages" => OpKind::MigratePages { range: urange()? },
            "add_memory" => OpKind::AddMemory(mrange(&[MemKind::Hotplug])?),
            "online_pages" => {
                let zone = match op.zone.as_ref().map(|z| *z.get_ref()) {
                    None | Some(ZoneName::Movable) => Zone::Movable,
                    Some(ZoneName::Normal) => Zone::Normal,
                };
                OpKind::OnlinePages(mrange(&[MemKind::Hotplug])?, zone)
            }
            "offline_pages" => OpKind::OfflinePages(mrange(&[MemKind::Hotplug])?),
            "remove_memory" => OpKind::RemoveMemory(mrange(&[MemKind::Hotplug])?),
            "offline_and_remove_memory" => {
                OpKind::OfflineAndRemoveMemory(mrange(&[MemKind::Hotplug])?)
            }
            "memremap_pages" => OpKind::MemremapPages(mrange(&[MemKind::Device])?),
            "memunmap_pages" => OpKind::MemunmapPages(mrange(&[MemKind::Device])?),
            "unmap_mapping_range" => OpKind::UnmapMappingRange(mrange(&[MemKind::Device])?),
            "pfn_valid" => {
                OpKind::PfnValid(mrange(&[MemKind::Boot, MemKind::Hotplug, MemKind::Device])?)
            }
            "pfn_walk" => {
                OpKind::PfnWalk(mrange(&[MemKind::Boot, MemKind::Hotplug, MemKind::Device])?)
            }
            "compact" => {
                OpKind::Compact(mrange(&[MemKind::Boot, MemKind::Hotplug, MemKind::Device])?)
            }
            "kpageflags" => {
                OpKind::Kpageflags(mrange(&[MemKind::Boot, MemKind::Hotplug, MemKind::Device])?)
            }
            "find_get_page" | "evict" | "truncate" => {
                let Some(f) = &op.file else {
                    return self.err(span, format!("`{name}` needs `file`"));
                };
                let fi = self.file_ref(ctx, f)?;
                let spec = &ctx.files[fi];
                let page = match &op.page {
                    None => 0,
                    Some(p) if *p.get_ref() < spec.pages => *p.get_ref(),
                    Some(p) => {
                        return self.err(
                            p.span(),
                            format!(
                                "page {} is outside file `{}` ({} page{})",
                                p.get_ref(),
                                spec.name,
                                spec.pages,
                                if spec.pages == 1 { "" } else { "s" }
                            ),
                        );
                    }
                };
                let pages = match &op.pages {
                    None if name == "find_get_page" => 1,
                    None => spec.pages - page,
                    Some(p) => {
                        let n = *p.get_ref();
                        if n == 0 || page.saturating_add(n) > spec.pages {
                            return self.err(
                                p.span(),
                                format!(
                                    "pages {page}..{} are not all inside file `{}` ({} pages)",
                                    page.saturating_add(n),
                                    spec.name,
                                    spec.pages
                                ),
                            );
                        }
                        n
                    }
                };
                let r = FRange {
                    file: fi,
                    page,
                    pages,
                };
                match name {
                    "find_get_page" => OpKind::FindGetPage(r),
                    "evict" => OpKind::Evict(r),
                    _ => OpKind::Truncate(r),
                }
            }
            "ksm_merge" => OpKind::KsmMerge { range: urange()? },
            "ksm_scan" => OpKind::KsmScan,
            "alloc_hugetlb" => {
                let range = mrange(&[MemKind::Boot, MemKind::Hotplug])?;
                if ctx.block_pages < HUGETLB_PAGES {
                    return self.err(
                        span,
                        format!(
                            "`alloc_hugetlb` needs sections of at least 2M (a 2 MiB folio in one section, as HVO needs); this scenario's are {}",
                            human(ctx.block_pages * 4096)
                        ),
                    );
                }
                let as_ = match &op.as_ {
                    None => None,
                    Some(a) => {
                        if refs.contains(a.get_ref()) {
                            return self.err(
                                a.span(),
                                format!("a second reference named `{}` on this CPU", a.get_ref()),
                            );
                        }
                        refs.push(a.get_ref().clone());
                        ref_kinds.push((false, false));
                        Some(refs.len() - 1)
                    }
                };
                OpKind::AllocHugetlb { range, as_ }
            }
            _ => return self.err(span, format!("unknown operation `{name}`")),
        };
        Ok(Op { name, kind, loc })
    }
}

struct Ctx<'a> {
    memory: &'a [Memory],
    files: &'a [FileSpec],
    block_pages: u64,
    /// The VMAs that mmap operations create, by (process, VMA): the CPU and
    /// the operation that creates each, and where.
    created: HashMap<(usize, usize), (usize, usize, Loc)>,
}

/// Where an operation is: its CPU, its index in that CPU's list, the CPU's
/// process, and the VMA it creates if it is an mmap.
#[derive(Clone, Copy)]
struct Here {
    cpu: usize,
    op: usize,
    process: Option<usize>,
    mmap_id: Option<usize>,
}

/// A forked process's VMA names begin with its parent's (every VMA the
/// parent has or maps; the child inherits those that exist at the fork).
fn inherit_vmas(processes: &mut [Process], declared: usize) {
    for i in declared..processes.len() {
        if let Some(p) = processes[i].forked_from {
            let mut v = processes[p].vmas.clone();
            v.append(&mut processes[i].vmas);
            processes[i].vmas = v;
        }
    }
}

/// The `[[process.vma]]` fields of an `mmap` operation.
fn mmap_fields(op: &RawOp) -> RawVma {
    fn c<T: Clone>(s: &Option<Spanned<T>>) -> Option<Spanned<T>> {
        s.clone()
    }
    RawVma {
        name: op
            .name
            .clone()
            .unwrap_or_else(|| Spanned::new(0..0, String::new())),
        pages: c(&op.pages),
        size: c(&op.size),
        prot: c(&op.prot),
        backing: c(&op.backing),
        memory: c(&op.memory),
        block: c(&op.block),
        populate: op.populate.as_ref().map(|p| *p.get_ref()),
        thp: op.thp.as_ref().map(|p| *p.get_ref()),
        file: c(&op.file),
    }
}

/// `2M`, `64K`, `1G` or bytes.
pub fn human(bytes: u64) -> String {
    for (s, n) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << n && bytes.is_multiple_of(1 << n) {
            return format!("{}{s}", bytes >> n);
        }
    }
    format!("{bytes} bytes")
}
