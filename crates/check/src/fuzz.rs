//! Generated scenario files, valid and hostile.
//!
//! [`Generator`] writes scenario files from the format's own tables. Which
//! operations exist and which fields each takes come from the validator's
//! table ([`crate::scenario::op_fields`]); how to make a plausible value for
//! a field is one line of [`FIELDS`]; the fields of a `[[process.vma]]` (and
//! of `mmap`) are [`VMA_FIELDS`]. So a new operation is generated as soon as
//! the validator knows it, and a new field needs one line here. A generated
//! file is valid most of the time (names resolve, sizes are whole sections,
//! pages are placed only in online memory), so that it reaches set-up and
//! the explorer: a random scenario hunt can use the generator as it is.
//!
//! [`mutate`] and [`mutate_text`] then break a file the ways a hostile user
//! would ([`MUTATIONS`], [`TEXT_MUTATIONS`]): deleted keys, swapped types,
//! extreme numbers, dangling names, unknown keys, duplicated entries, an
//! operation moved to another CPU, another legal value of an enumerated
//! field ([`ENUMS`]), a flipped boolean, a number off by one; truncation,
//! stray bytes (not always UTF-8), lost or repeated lines, integer literals
//! past 64 bits.
//!
//! [`exercise`] runs one file the way `mmsim check` does (parse, validate,
//! set-up, a few explored schedules) and says what the command line would
//! answer ([`Verdict`]), or that it would be wrong: a panic, an internal
//! error, or a refusal without `file:line:column`.
//!
//! [`Generator::hunter`] is the generator in hunt mode (`mmsim hunt`): only
//! files meant to be valid, two to four CPUs with one to four operations
//! each, every reference taken dropped again, and operations drawn with the
//! weights of [`HUNT_WEIGHTS`]: the first CPU leans to lockless readers, the
//! others to operations that free or change what a reader looks at. An
//! operation the table does not list is drawn with weight
//! [`HUNT_DEFAULT_WEIGHT`] on every CPU, so a new operation joins the hunt
//! as soon as the validator knows it.
//!
//! Everything is seeded (SplitMix64): the same seed gives the same file.

use crate::explore::{Options, Strategy, explore};
use crate::scenario::{op_fields, parse_bytes};
use crate::setup::{Overrides, Plan};
use mmsim_model::config::REGISTRY as CONFIG;
use mmsim_model::detect::Kind;
use mmsim_model::safeguards::REGISTRY;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use toml::{Table, Value};

/// A small seeded generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True `pct` times in a hundred.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A memory range generated so far.
#[derive(Clone, Debug)]
struct Mem {
    name: String,
    kind: &'static str,
    state: &'static str,
    dev_type: &'static str,
    /// Hotplug memory onlined to ZONE_NORMAL.
    normal: bool,
    blocks: u64,
}

/// A VMA name and its length.
#[derive(Clone, Debug)]
struct VmaInfo {
    name: String,
    pages: u64,
}

/// A CPU generated so far: its process, the VMAs its mmaps created, its
/// references (name, pins, dropped).
#[derive(Clone, Debug, Default)]
struct CpuInfo {
    process: Option<usize>,
    mapped: Vec<VmaInfo>,
    refs: Vec<(String, bool, bool)>,
}

/// What a field generator sees: the table being built (its earlier fields
/// are there), what it is, and the CPU it is on.
pub struct Cx<'a> {
    /// The operation's name, or `[[process.vma]]`.
    pub what: &'a str,
    /// The fields generated so far.
    pub table: &'a Table,
    /// The CPU, for an operation.
    cpu: Option<usize>,
    /// The process whose VMAs can be named.
    process: Option<usize>,
}

/// A field generator: a value, or `None` to leave the field out.
pub type FieldGen = fn(&mut Generator, &Cx<'_>) -> Option<Value>;

/// How to make each field of an operation or a VMA: one line per field.
/// A field not listed here is left out (and the validator's default used).
pub static FIELDS: &[(&str, FieldGen)] = &[
    ("vma", gen_vma_ref),
    ("page", gen_page),
    ("pages", gen_pages),
    ("flags", gen_flags),
    ("as", gen_as),
    ("ref", gen_ref),
    ("value", |g, _| {
        g.rng
            .chance(50)
            .then(|| Value::Integer((g.rng.next_u64() >> 2) as i64))
    }),
    ("write", |g, _| {
        g.rng.chance(50).then(|| Value::Boolean(g.rng.chance(50)))
    }),
    ("name", gen_name),
    ("size", gen_vma_size),
    ("prot", gen_prot),
    ("backing", gen_backing),
    ("memory", gen_memory_ref),
    ("block", gen_block),
    ("populate", gen_populate),
    ("thp", gen_thp),
    ("file", gen_file_ref),
    ("advice", |g, _| {
        Some(Value::String(
            g.rng
                .pick(&["dontneed", "dontneed", "cold", "pageout", "free"])
                .into(),
        ))
    }),
    ("zone", |g, _| {
        g.rng
            .chance(50)
            .then(|| Value::String(g.rng.pick(&["movable", "normal"]).into()))
    }),
];

/// The fields of a `[[process.vma]]` (and of an `mmap` operation), in the
/// order they are generated (later ones look at earlier ones).
pub static VMA_FIELDS: &[&str] = &[
    "name", "pages", "size", "prot", "backing", "memory", "block", "populate", "thp", "file",
];

/// Which kinds of memory an operation's `memory` names (any, if not
/// listed).
static MEMORY_KINDS: &[(&str, &[&str])] = &[
    ("add_memory", &["hotplug"]),
    ("online_pages", &["hotplug"]),
    ("offline_pages", &["hotplug"]),
    ("remove_memory", &["hotplug"]),
    ("offline_and_remove_memory", &["hotplug"]),
    ("memremap_pages", &["device"]),
    ("memunmap_pages", &["device"]),
    ("unmap_mapping_range", &["device"]),
    // The pfn scanners walk any range; over device memory they find no
    // online page (and compaction never scans ZONE_DEVICE).
    ("compact", &["boot", "hotplug", "device"]),
    ("kpageflags", &["boot", "hotplug", "device"]),
    ("alloc_hugetlb", &["boot", "hotplug"]),
];

/// How strongly hunt mode draws an operation: (name, weight on a reader
/// CPU, weight on a changer CPU). CPU 0 is a reader, CPU 1 a changer, the
/// others either. Readers are the lockless walkers (GUP-fast, pfn walkers,
/// page-cache lookups); changers free or change what they read (hot-remove,
/// `memunmap_pages`, munmap, migration, splits, collapses, fork). Names the
/// validator does not know are never drawn (the table is read through the
/// validator's list), so an entry may name an operation of another branch.
pub static HUNT_WEIGHTS: &[(&str, u64, u64)] = &[
    ("get_user_pages_fast", 12, 1),
    ("pin_user_pages_fast", 16, 1),
    ("pfn_walk", 6, 1),
    ("pfn_valid", 4, 1),
    ("find_get_page", 6, 1),
    ("kpageflags", 4, 1),
    ("ksm_scan", 3, 1),
    ("get_user_pages", 1, 1),
    ("pin_user_pages", 1, 1),
    ("offline_and_remove_memory", 1, 14),
    ("remove_memory", 1, 4),
    ("offline_pages", 1, 5),
    ("memunmap_pages", 1, 10),
    ("unmap_mapping_range", 1, 4),
    ("munmap", 1, 8),
    ("madvise", 1, 5),
    ("migrate_pages", 1, 8),
    ("split_folio", 1, 6),
    ("collapse", 1, 6),
    ("fork", 1, 6),
    ("mprotect", 1, 2),
    ("evict", 1, 5),
    ("truncate", 1, 5),
    ("compact", 1, 5),
    ("ksm_merge", 1, 4),
    ("alloc_hugetlb", 1, 2),
];

/// The weight of an operation [`HUNT_WEIGHTS`] does not list.
pub const HUNT_DEFAULT_WEIGHT: u64 = 2;

/// A driver's calls on its device range, which the kernel leaves to the
/// driver to make once and in order (`devm_memremap_pages()` at probe,
/// `memunmap_pages()` at remove): hunt mode writes them for one range on
/// one CPU only, so that it never reports a driver calling them twice at
/// once.
static DRIVER_OPS: &[&str] = &["memremap_pages", "memunmap_pages"];

/// What a driver always does right before one of its calls, on the same
/// range: device-dax's `kill_dev_dax()` (and every ZONE_DEVICE driver's
/// teardown) zaps the user mappings of the range before `memunmap_pages()`,
/// which otherwise would free a memmap that page tables still point into,
/// or wait forever for the references those mappings hold. Hunt mode
/// writes the first operation before the second.
pub static DRIVER_PRELUDE: &[(&str, &str)] = &[("memunmap_pages", "unmap_mapping_range")];

/// Writes scenario files: see the module doc.
pub struct Generator {
    /// The random source.
    pub rng: Rng,
    /// Hunt mode: see [`Generator::hunter`].
    valid: bool,
    section: u64,
    memory: Vec<Mem>,
    processes: Vec<Vec<VmaInfo>>,
    cpus: Vec<CpuInfo>,
    /// The `[[file]]`s: name and pages.
    files: Vec<(String, u64)>,
    names: u64,
    /// Hunt mode: the CPU that runs [`DRIVER_OPS`] on each device range.
    owners: Vec<(String, usize)>,
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            valid: false,
            section: 64 << 10,
            memory: Vec::new(),
            processes: Vec::new(),
            cpus: Vec::new(),
            files: Vec::new(),
            names: 0,
            owners: Vec::new(),
        }
    }

    /// A generator in hunt mode, seeded with `seed`: see the module doc.
    pub fn hunter(seed: u64) -> Generator {
        let mut g = Generator::new(seed);
        g.valid = true;
        g
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    fn size(&self, blocks: u64) -> Value {
        Value::String(crate::scenario::human(blocks * self.section))
    }

    /// A scenario file, valid most of the time, as a TOML table.
    pub fn scenario(&mut self) -> Table {
        self.memory.clear();
        self.processes.clear();
        self.cpus.clear();
        self.files.clear();
        self.owners.clear();
        if self.valid {
            return self.hunt_scenario();
        }
        let mut t = Table::new();
        t.insert(
            "name".into(),
            Value::String(format!("fuzz-{}", self.rng.below(1000))),
        );
        if self.rng.chance(30) {
            t.insert("summary".into(), Value::String("generated".into()));
        }
        if self.rng.chance(60) {
            t.insert(
                "arch".into(),
                Value::String(self.rng.pick(&["ipi", "broadcast"]).into()),
            );
        }
        // Small sections keep machines small; now and then the default
        // (128M), which makes every range a multiple of it.
        self.section = if self.rng.chance(5) {
            128 << 20
        } else {
            let s = self.rng.pick(&[64u64 << 10, 128 << 10, 256 << 10, 2 << 20]);
            t.insert(
                "section_size".into(),
                Value::String(crate::scenario::human(s)),
            );
            s
        };
        if self.rng.chance(30) {
            let mut sg = Table::new();
            for _ in 0..=self.rng.below(2) {
                let i = self.rng.below(REGISTRY.len() as u64) as usize;
                sg.insert(REGISTRY[i].name.into(), Value::Boolean(self.rng.chance(50)));
            }
            t.insert("safeguards".into(), Value::Table(sg));
        }
        if self.rng.chance(30) {
            let mut c = Table::new();
            for _ in 0..=self.rng.below(2) {
                let i = self.rng.below(CONFIG.len() as u64) as usize;
                c.insert(CONFIG[i].name.into(), Value::Boolean(self.rng.chance(50)));
            }
            t.insert("config".into(), Value::Table(c));
        }
        t.insert("memory".into(), Value::Array(self.memories()));
        if self.rng.chance(35) {
            let files: Vec<Value> = (0..1 + self.rng.below(2)).map(|_| self.file()).collect();
            t.insert("file".into(), Value::Array(files));
        }
        let procs: Vec<Value> = (0..self.rng.below(3)).map(|_| self.process()).collect();
        if !procs.is_empty() {
            t.insert("process".into(), Value::Array(procs));
        }
        let cpus: Vec<Value> = (0..1 + self.rng.below(3)).map(|_| self.cpu()).collect();
        t.insert("cpu".into(), Value::Array(cpus));
        if self.rng.chance(50) {
            let file_sg = t.get("safeguards").and_then(Value::as_table).cloned();
            let file_config = t.get("config").and_then(Value::as_table).cloned();
            let arch = t
                .get("arch")
                .and_then(Value::as_str)
                .unwrap_or("ipi")
                .to_string();
            let e = self.expect(&arch, file_sg.as_ref(), file_config.as_ref());
            t.insert("expect".into(), Value::Table(e));
        }
        t
    }

    /// Hunt mode's file: no settings (the hunt applies its own), no
    /// `[expect]`, one or two processes with one to three VMAs each, two to
    /// four CPUs.
    fn hunt_scenario(&mut self) -> Table {
        let mut t = Table::new();
        t.insert("name".into(), Value::String("hunt".into()));
        // Small sections: an operation over a range takes a step or more
        // per page, and every schedule walks it.
        self.section = self.rng.pick(&[64u64 << 10, 64 << 10, 128 << 10]);
        t.insert(
            "section_size".into(),
            Value::String(crate::scenario::human(self.section)),
        );
        t.insert("memory".into(), Value::Array(self.memories()));
        // A file now and then, so the page-cache operations (and file
        // VMAs) join the hunt.
        if self.rng.chance(30) {
            let files: Vec<Value> = (0..1 + self.rng.below(2)).map(|_| self.file()).collect();
            t.insert("file".into(), Value::Array(files));
        }
        let procs: Vec<Value> = (0..1 + self.rng.below(2)).map(|_| self.process()).collect();
        t.insert("process".into(), Value::Array(procs));
        let cpus: Vec<Value> = (0..2 + self.rng.below(3)).map(|_| self.cpu()).collect();
        t.insert("cpu".into(), Value::Array(cpus));
        t
    }

    /// Hunt mode's draw of an operation for CPU `cpu` among `fit`.
    fn weighted<'t>(
        &mut self,
        cpu: usize,
        fit: &[&'t (&'static str, &'static [&'static str])],
    ) -> &'t (&'static str, &'static [&'static str]) {
        let reader = cpu == 0 || (cpu > 1 && self.rng.chance(50));
        let weight = |name: &str| {
            HUNT_WEIGHTS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or(HUNT_DEFAULT_WEIGHT, |&(_, r, c)| if reader { r } else { c })
        };
        let total: u64 = fit.iter().map(|(n, _)| weight(n)).sum();
        let mut x = self.rng.below(total);
        for f in fit {
            let w = weight(f.0);
            if x < w {
                return f;
            }
            x -= w;
        }
        fit[fit.len() - 1]
    }

    fn memories(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut add = |g: &mut Generator, kind: &'static str, blocks: u64| {
            let name = if kind == "boot" {
                "boot".to_string()
            } else {
                g.fresh(kind)
            };
            let mut m = Table::new();
            m.insert("name".into(), Value::String(name.clone()));
            m.insert("kind".into(), Value::String(kind.into()));
            m.insert("size".into(), g.size(blocks));
            let (state, dev_type) = match kind {
                "hotplug" if g.valid => (
                    g.rng
                        .pick(&["absent", "offline", "online", "online", "online"]),
                    "",
                ),
                "hotplug" => (g.rng.pick(&["absent", "offline", "online"]), ""),
                "device" => (
                    g.rng
                        .pick(&["absent", "mapped", "mapped", "mapped"][..3 + g.valid as usize]),
                    g.rng.pick(&["generic", "fsdax", "coherent", "private"]),
                ),
                _ => ("boot", ""),
            };
            if kind != "boot" {
                m.insert("state".into(), Value::String(state.into()));
            }
            let mut normal = false;
            if kind == "hotplug" && g.rng.chance(40) {
                let z = g.rng.pick(&["movable", "normal"]);
                normal = z == "normal";
                m.insert("zone".into(), Value::String(z.into()));
            }
            if kind != "boot" && g.rng.chance(20) {
                m.insert("node".into(), Value::Integer(g.rng.below(3) as i64));
            }
            if kind == "device" && g.rng.chance(80) {
                m.insert("type".into(), Value::String(dev_type.into()));
            }
            g.memory.push(Mem {
                name,
                kind,
                state,
                dev_type: if dev_type.is_empty() || m.contains_key("type") {
                    dev_type
                } else {
                    "generic"
                },
                normal,
                blocks,
            });
            out.push(Value::Table(m));
        };
        // Boot memory big enough for page tables and a few populated VMAs.
        let boot_blocks = ((256 << 10) / self.section).max(1) + self.rng.below(3);
        add(self, "boot", boot_blocks);
        for _ in 0..self.rng.below(3) + self.valid as u64 {
            let b = 1 + self.rng.below(3);
            add(self, "hotplug", b);
        }
        if self.rng.chance(40) {
            let b = 1 + self.rng.below(2);
            add(self, "device", b);
        }
        out
    }

    /// A `[[file]]`: its cached folios now and then placed in a memory
    /// range (not always one they can be placed in).
    fn file(&mut self) -> Value {
        let mut f = Table::new();
        let name = self.fresh("f");
        f.insert("name".into(), Value::String(name.clone()));
        let pages = 1 + self.rng.below(8);
        if self.rng.chance(70) {
            f.insert("pages".into(), Value::Integer(pages as i64));
        } else {
            f.insert("size".into(), Value::String(format!("{}K", 4 * pages)));
        }
        let cached = self.rng.chance(80);
        if !cached || self.rng.chance(10) {
            f.insert("cached".into(), Value::Boolean(cached));
        }
        if cached && self.rng.chance(50) {
            let any = self.rng.chance(10);
            if let Some(m) = pick_memory(self, &["boot", "hotplug"], |m| {
                any || m.state == "boot" || m.state == "online" && !m.normal
            }) {
                let blocks = self
                    .memory
                    .iter()
                    .find(|x| x.name == m)
                    .map_or(1, |x| x.blocks);
                f.insert("memory".into(), Value::String(m));
                if self.rng.chance(40) {
                    f.insert(
                        "block".into(),
                        Value::Integer(self.rng.below(blocks) as i64),
                    );
                }
            }
        }
        if self.rng.chance(25) {
            f.insert("shmem".into(), Value::Boolean(self.rng.chance(60)));
        }
        self.files.push((name, pages));
        Value::Table(f)
    }

    /// Generates the listed fields into a table, each from [`FIELDS`].
    fn fields(&mut self, table: &mut Table, what: &str, names: &[&str], cpu: Option<usize>) {
        let process = match cpu {
            Some(c) => self.cpus[c].process,
            None => self.processes.len().checked_sub(1),
        };
        for f in names {
            let Some((_, g)) = FIELDS.iter().find(|(n, _)| n == f) else {
                continue;
            };
            let cx = Cx {
                what,
                table,
                cpu,
                process,
            };
            if let Some(v) = g(self, &cx) {
                table.insert((*f).into(), v);
            }
        }
    }

    fn process(&mut self) -> Value {
        let mut p = Table::new();
        p.insert(
            "name".into(),
            Value::String(format!("p{}", self.processes.len())),
        );
        self.processes.push(Vec::new());
        let mut vmas = Vec::new();
        let n = if self.valid {
            1 + self.rng.below(3)
        } else {
            self.rng.below(4)
        };
        for _ in 0..n {
            let mut v = Table::new();
            self.fields(&mut v, "[[process.vma]]", VMA_FIELDS, None);
            self.remember_vma(&v, None);
            vmas.push(Value::Table(v));
        }
        if !vmas.is_empty() {
            p.insert("vma".into(), Value::Array(vmas));
        }
        Value::Table(p)
    }

    /// Records a VMA that `v` defines, for later operations to name.
    fn remember_vma(&mut self, v: &Table, cpu: Option<usize>) {
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            return;
        };
        let pages = vma_pages(v);
        let info = VmaInfo {
            name: name.to_string(),
            pages,
        };
        match cpu {
            Some(c) => self.cpus[c].mapped.push(info),
            None => {
                if let Some(p) = self.processes.last_mut() {
                    p.push(info);
                }
            }
        }
    }

    fn cpu(&mut self) -> Value {
        let mut c = Table::new();
        let process = if self.processes.is_empty() {
            None
        } else {
            let p = self.rng.below(self.processes.len() as u64) as usize;
            if p > 0 || self.rng.chance(30) {
                c.insert("process".into(), Value::String(format!("p{p}")));
            }
            Some(p)
        };
        let id = self.cpus.len();
        self.cpus.push(CpuInfo {
            process,
            ..Default::default()
        });
        let table = op_fields();
        let mut ops = Vec::new();
        let n = if self.valid {
            1 + self.rng.below(4)
        } else {
            self.rng.below(5)
        };
        for _ in 0..n {
            // Mostly operations whose fields can name something that
            // exists; now and then any, to reach the errors too.
            let fit: Vec<_> = table
                .iter()
                .filter(|(name, fields)| self.feasible(id, name, fields))
                .collect();
            let (name, fields) = if self.valid {
                if fit.is_empty() {
                    break;
                }
                *self.weighted(id, &fit)
            } else if fit.is_empty() || self.rng.chance(5) {
                table[self.rng.below(table.len() as u64) as usize]
            } else {
                *fit[self.rng.below(fit.len() as u64) as usize]
            };
            let mut op = Table::new();
            op.insert("op".into(), Value::String(name.into()));
            self.fields(&mut op, name, fields, Some(id));
            if name == "mmap" {
                self.remember_vma(&op, Some(id));
            }
            if self.valid
                && let Some((_, first)) = DRIVER_PRELUDE.iter().find(|(o, _)| *o == name)
                && let Some(m) = op.get("memory").cloned()
            {
                let mut pre = Table::new();
                pre.insert("op".into(), Value::String((*first).into()));
                pre.insert("memory".into(), m);
                ops.push(Value::Table(pre));
            }
            ops.push(Value::Table(op));
        }
        if self.valid {
            // Every reference taken is dropped again: a reference left at
            // teardown is a leak of the scenario, not of the kernel.
            for (name, pins, dropped) in &mut self.cpus[id].refs {
                if !*dropped {
                    *dropped = true;
                    let mut op = Table::new();
                    let drop = if *pins {
                        "unpin_user_pages"
                    } else {
                        "put_pages"
                    };
                    op.insert("op".into(), Value::String(drop.into()));
                    op.insert("ref".into(), Value::String(name.clone()));
                    ops.push(Value::Table(op));
                }
            }
        }
        c.insert("ops".into(), Value::Array(ops));
        Value::Table(c)
    }

    /// Whether operation `name` with `fields` can be written on CPU `cpu`
    /// so that its names resolve: read from the fields it takes.
    fn feasible(&self, cpu: usize, name: &str, fields: &[&str]) -> bool {
        let c = &self.cpus[cpu];
        let vmas = c.process.map_or(0, |p| self.processes[p].len()) + c.mapped.len();
        fields.iter().all(|f| match *f {
            "vma" => vmas > 0,
            "ref" => {
                let pins = name == "unpin_user_pages";
                c.refs.iter().any(|(_, p, dropped)| *p == pins && !dropped)
            }
            "memory" if name != "mmap" => {
                let kinds = MEMORY_KINDS
                    .iter()
                    .find(|(op, _)| *op == name)
                    .map_or(&[][..], |(_, k)| *k);
                self.memory.iter().any(|m| {
                    (kinds.is_empty() || kinds.contains(&m.kind))
                        && (!self.valid
                            || !DRIVER_OPS.contains(&name)
                            || self.may_drive(&m.name, cpu))
                })
            }
            "name" => c.process.is_some(),
            "file" if name != "mmap" => !self.files.is_empty(),
            _ => true,
        })
    }

    /// Hunt mode: whether CPU `cpu` may run a driver's call on range
    /// `name` (no other CPU does).
    fn may_drive(&self, name: &str, cpu: usize) -> bool {
        self.owners.iter().all(|(n, c)| n != name || *c == cpu)
    }

    /// `[expect]`, whose variants each change the file's settings (`arch`,
    /// the file's `[config]` and `[safeguards]`) in their own way.
    fn expect(
        &mut self,
        arch: &str,
        file_sg: Option<&Table>,
        file_config: Option<&Table>,
    ) -> Table {
        let mut e = Table::new();
        let kinds: Vec<&str> = std::iter::once("none")
            .chain(Kind::ALL.iter().map(|k| k.name()))
            .collect();
        e.insert(
            "violation".into(),
            Value::String(self.rng.pick(&kinds).into()),
        );
        if self.rng.chance(20) {
            e.insert("check_leaks".into(), Value::Boolean(self.rng.chance(50)));
        }
        if self.rng.chance(20) {
            e.insert(
                "iterations".into(),
                Value::Integer(1 + self.rng.below(50) as i64),
            );
        }
        let is_on = |table: Option<&Table>, name: &str, info_default: bool| {
            table
                .and_then(|t| t.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(info_default)
        };
        let mut variants = Vec::new();
        // Variant 0 flips the arch or a configuration option; the others
        // flip one safeguard each, a different one every time. (A
        // configuration option also moves safeguard defaults, so a config
        // variant can meet a safeguard one: the validator says so.)
        let mut flipped: Vec<usize> = Vec::new();
        for k in 0..self.rng.below(3) {
            let mut v = Table::new();
            if k == 0 && self.rng.chance(30) {
                let other = if arch == "ipi" { "broadcast" } else { "ipi" };
                v.insert("arch".into(), Value::String(other.into()));
            } else if k == 0 && self.rng.chance(40) {
                let info = &CONFIG[self.rng.below(CONFIG.len() as u64) as usize];
                let mut c = Table::new();
                c.insert(
                    info.name.into(),
                    Value::Boolean(!is_on(file_config, info.name, info.default)),
                );
                v.insert("config".into(), Value::Table(c));
            } else {
                let i = self.rng.below(REGISTRY.len() as u64) as usize;
                if flipped.contains(&i) {
                    continue;
                }
                flipped.push(i);
                let info = &REGISTRY[i];
                let mut sg = Table::new();
                sg.insert(
                    info.name.into(),
                    Value::Boolean(!is_on(file_sg, info.name, info.default)),
                );
                v.insert("safeguards".into(), Value::Table(sg));
            }
            v.insert(
                "violation".into(),
                Value::String(self.rng.pick(&kinds).into()),
            );
            variants.push(Value::Table(v));
        }
        if !variants.is_empty() {
            e.insert("variant".into(), Value::Array(variants));
        }
        e
    }
}

/// The pages a `[[process.vma]]` table defines (its `pages`, or its `size`
/// in 4K pages; 1 if neither makes sense).
fn vma_pages(v: &Table) -> u64 {
    if let Some(p) = v.get("pages").and_then(Value::as_integer) {
        return p.max(1) as u64;
    }
    v.get("size")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_suffix('K'))
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(1, |k| (k / 4).max(1))
}

fn string(s: impl Into<String>) -> Option<Value> {
    Some(Value::String(s.into()))
}

fn is_vma_def(cx: &Cx<'_>) -> bool {
    cx.what == "[[process.vma]]" || cx.what == "mmap"
}

/// The VMAs an operation may name: its process's, and those its CPU's
/// earlier mmaps created.
fn nameable(g: &Generator, cx: &Cx<'_>) -> Vec<VmaInfo> {
    let mut v = cx
        .process
        .and_then(|p| g.processes.get(p).cloned())
        .unwrap_or_default();
    if let Some(c) = cx.cpu {
        v.extend(g.cpus[c].mapped.iter().cloned());
    }
    v
}

/// The VMA the operation's `vma` field chose.
fn chosen_vma(g: &Generator, cx: &Cx<'_>) -> Option<VmaInfo> {
    let name = cx.table.get("vma")?.as_str()?;
    nameable(g, cx).into_iter().find(|v| v.name == name)
}

fn gen_vma_ref(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    let v = nameable(g, cx);
    if v.is_empty() || !g.valid && g.rng.chance(2) {
        return string("nowhere");
    }
    let i = g.rng.below(v.len() as u64) as usize;
    string(v[i].name.clone())
}

/// The pages of the file the operation's `file` field chose.
fn chosen_file(g: &Generator, cx: &Cx<'_>) -> Option<u64> {
    let name = cx.table.get("file")?.as_str()?;
    g.files.iter().find(|f| f.0 == name).map(|f| f.1)
}

fn gen_file_ref(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if is_vma_def(cx) && backing(cx) != "file" {
        return None;
    }
    if g.files.is_empty() || g.rng.chance(2) {
        return string("nofile");
    }
    // A file VMA fits its file, mostly.
    let want = if is_vma_def(cx) {
        vma_pages(cx.table)
    } else {
        1
    };
    let fit: Vec<String> = g
        .files
        .iter()
        .filter(|f| f.1 >= want || g.rng.chance(5))
        .map(|f| f.0.clone())
        .collect();
    if fit.is_empty() {
        return string(g.files[0].0.clone());
    }
    let i = g.rng.below(fit.len() as u64) as usize;
    string(fit[i].clone())
}

fn gen_page(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if let Some(pages) = chosen_file(g, cx) {
        return (!g.rng.chance(30)).then(|| Value::Integer(g.rng.below(pages) as i64));
    }
    let v = chosen_vma(g, cx)?;
    if g.rng.chance(40) {
        return None;
    }
    Some(Value::Integer(g.rng.below(v.pages) as i64))
}

fn gen_pages(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if is_vma_def(cx) {
        return g
            .rng
            .chance(60)
            .then(|| Value::Integer(1 + g.rng.below(4) as i64));
    }
    if let Some(file_pages) = chosen_file(g, cx) {
        if g.rng.chance(50) {
            return None;
        }
        let page = cx
            .table
            .get("page")
            .and_then(Value::as_integer)
            .unwrap_or(0) as u64;
        let left = file_pages.saturating_sub(page).max(1);
        return Some(Value::Integer(1 + g.rng.below(left) as i64));
    }
    let v = chosen_vma(g, cx)?;
    if g.rng.chance(50) {
        return None;
    }
    let page = cx
        .table
        .get("page")
        .and_then(Value::as_integer)
        .unwrap_or(0) as u64;
    let left = v.pages.saturating_sub(page).max(1);
    Some(Value::Integer(1 + g.rng.below(left) as i64))
}

fn gen_vma_size(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if cx.table.contains_key("pages") {
        return None;
    }
    string(format!("{}K", 4 * (1 + g.rng.below(4))))
}

fn gen_flags(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if g.rng.chance(50) {
        return None;
    }
    let mut all = vec!["write", "fast_only", "force"];
    if cx.what.starts_with("pin_") {
        all.push("longterm");
    }
    let f: Vec<Value> = all
        .into_iter()
        .filter(|_| g.rng.chance(40))
        .map(|f| Value::String(f.into()))
        .collect();
    Some(Value::Array(f))
}

fn gen_as(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    let c = cx.cpu?;
    // Hunt mode names every reference, so that it can be dropped.
    if !g.valid && g.rng.chance(40) {
        return None;
    }
    let name = g.fresh("r");
    if g.valid && cx.what == "fork" {
        // The child process: no reference to drop.
        return string(name);
    }
    g.cpus[c]
        .refs
        .push((name.clone(), cx.what.starts_with("pin_"), false));
    string(name)
}

fn gen_ref(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    let c = cx.cpu?;
    let pins = cx.what == "unpin_user_pages";
    let open = g.cpus[c]
        .refs
        .iter_mut()
        .find(|(_, p, dropped)| *p == pins && !*dropped);
    match open {
        Some(r) => {
            r.2 = true;
            string(r.0.clone())
        }
        None => string("r0"),
    }
}

fn gen_name(g: &mut Generator, _: &Cx<'_>) -> Option<Value> {
    string(g.fresh("v"))
}

fn gen_prot(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if is_vma_def(cx) && g.rng.chance(50) {
        return None;
    }
    string(g.rng.pick(&["rw", "rw", "r", "none"]))
}

fn gen_backing(g: &mut Generator, _: &Cx<'_>) -> Option<Value> {
    let device = g.memory.iter().any(|m| m.kind == "device");
    let mut choices = vec!["anon", "anon", "anon", "shared", "pfnmap"];
    if device {
        choices.extend(["device", "device"]);
    }
    if !g.files.is_empty() {
        choices.extend(["file", "file"]);
    }
    let b = g.rng.pick(&choices);
    (b != "anon" || g.rng.chance(50)).then(|| Value::String(b.into()))
}

fn backing<'t>(cx: &'t Cx<'_>) -> &'t str {
    cx.table
        .get("backing")
        .and_then(Value::as_str)
        .unwrap_or("anon")
}

/// A memory range of one of `kinds` (any kind if `kinds` is empty), that
/// also passes `ok`; or `None`.
fn pick_memory(g: &mut Generator, kinds: &[&str], ok: impl Fn(&Mem) -> bool) -> Option<String> {
    let fit: Vec<String> = g
        .memory
        .iter()
        .filter(|m| (kinds.is_empty() || kinds.contains(&m.kind)) && ok(m))
        .map(|m| m.name.clone())
        .collect();
    if fit.is_empty() {
        return None;
    }
    let i = g.rng.below(fit.len() as u64) as usize;
    Some(fit[i].clone())
}

fn gen_memory_ref(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if !is_vma_def(cx) {
        let kinds = MEMORY_KINDS
            .iter()
            .find(|(op, _)| *op == cx.what)
            .map_or(&[][..], |(_, k)| *k);
        if g.valid
            && DRIVER_OPS.contains(&cx.what)
            && let Some(cpu) = cx.cpu
        {
            let owners = g.owners.clone();
            let free = |m: &Mem| owners.iter().all(|(n, c)| *n != m.name || *c == cpu);
            let m = pick_memory(g, kinds, free)?;
            if !g.owners.iter().any(|(n, _)| *n == m) {
                g.owners.push((m.clone(), cpu));
            }
            return string(m);
        }
        let m = pick_memory(g, kinds, |_| true).unwrap_or_else(|| "boot".into());
        return string(m);
    }
    match backing(cx) {
        "anon" | "shared" => {
            let prot_none = cx.table.get("prot").and_then(Value::as_str) == Some("none");
            if cx.what == "mmap" || prot_none || !g.rng.chance(40 + 30 * g.valid as u64) {
                return None;
            }
            // Now and then memory pages cannot be placed in (offline,
            // absent, ZONE_NORMAL): set-up must never see that.
            let any = !g.valid && g.rng.chance(10);
            pick_memory(g, &["boot", "hotplug"], |m| {
                any || m.state == "boot" || m.state == "online" && !m.normal
            })
            .map(Value::String)
        }
        "device" => string(pick_memory(g, &["device"], |_| true).unwrap_or_else(|| "nodev".into())),
        // A file VMA's pages are its file's page cache.
        "file" => None,
        _ => string(pick_memory(g, &[], |_| true).unwrap_or_else(|| "boot".into())),
    }
}

fn gen_block(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    let name = cx.table.get("memory")?.as_str()?;
    let blocks = g.memory.iter().find(|m| m.name == name)?.blocks;
    g.rng
        .chance(50)
        .then(|| Value::Integer(g.rng.below(blocks) as i64))
}

fn gen_populate(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    if cx.table.get("prot").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let memory = cx.table.get("memory").and_then(Value::as_str);
    match backing(cx) {
        // `memory` on an anonymous VMA needs populate.
        "anon" | "shared" if memory.is_some() => Some(Value::Boolean(true)),
        "anon" | "shared" | "file" if g.valid => g.rng.chance(85).then_some(Value::Boolean(true)),
        "anon" | "shared" | "file" => g.rng.chance(60).then(|| Value::Boolean(g.rng.chance(70))),
        "device" => {
            let m = g.memory.iter().find(|m| Some(m.name.as_str()) == memory)?;
            // Now and then from memory that cannot be populated from.
            let can = m.state == "mapped" && m.dev_type != "private" || g.rng.chance(10);
            (can && g.rng.chance(70)).then_some(Value::Boolean(true))
        }
        _ => None,
    }
}

fn gen_thp(g: &mut Generator, cx: &Cx<'_>) -> Option<Value> {
    (matches!(backing(cx), "anon" | "file") && g.rng.chance(15)).then_some(Value::Boolean(true))
}

/// One step of a path into a TOML tree.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every path into `v` (not the root itself).
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Table(t) => {
            for (k, c) in t {
                here.push(Step::Key(k.clone()));
                out.push(here.clone());
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(Step::Index(i));
                out.push(here.clone());
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'v>(v: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    let mut cur = v;
    for s in path {
        cur = match (s, cur) {
            (Step::Key(k), Value::Table(t)) => t.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A random path whose value passes `ok`.
fn pick_path(
    rng: &mut Rng,
    root: &Value,
    ok: impl Fn(&[Step], &Value) -> bool,
) -> Option<Vec<Step>> {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let mut root_copy = root.clone();
    all.retain(|p| at_mut(&mut root_copy, p).is_some_and(|v| ok(p, v)));
    if all.is_empty() {
        return None;
    }
    let i = rng.below(all.len() as u64) as usize;
    Some(all.swap_remove(i))
}

/// A mutation of a scenario's TOML tree.
pub type TreeMutation = fn(&mut Rng, &mut Value);

/// A mutation of a scenario file's bytes.
pub type TextMutation = fn(&mut Rng, &mut Vec<u8>);

/// The mutations of the TOML tree, one line each.
pub static MUTATIONS: &[(&str, TreeMutation)] = &[
    ("delete a key", delete_key),
    ("swap a value's type", swap_type),
    ("an extreme number or size", extreme),
    ("a dangling name", dangle),
    ("an unknown key", unknown_key),
    ("a duplicated entry", duplicate),
    ("an operation moved to another CPU", move_op),
    ("another legal value", another_value),
    ("a flipped boolean", flip_bool),
    ("a number off by one", off_by_one),
];

/// The legal values of the format's enumerated fields (and `op`, from the
/// validator's table): "another legal value" swaps one for another, which
/// makes files that parse but mean something else (a state that leaves a
/// VMA's memory offline, an operation on the wrong kind of memory).
static ENUMS: &[(&str, &[&str])] = &[
    ("state", &["absent", "offline", "online", "mapped"]),
    ("kind", &["boot", "hotplug", "device"]),
    ("type", &["generic", "fsdax", "coherent", "private"]),
    ("zone", &["movable", "normal"]),
    ("backing", &["anon", "shared", "device", "pfnmap", "file"]),
    ("prot", &["none", "r", "rw"]),
    ("arch", &["ipi", "broadcast"]),
    (
        "advice",
        &["dontneed", "cold", "pageout", "free", "willneed"],
    ),
    (
        "section_size",
        &["64K", "128K", "2M", "128M", "32K", "256M"],
    ),
];

/// The mutations of the text, one line each.
pub static TEXT_MUTATIONS: &[(&str, TextMutation)] = &[
    ("truncated", |r, b| {
        b.truncate(r.below(b.len() as u64 + 1) as usize)
    }),
    ("a stray byte", |r, b| {
        let at = r.below(b.len() as u64 + 1) as usize;
        b.insert(at, r.next_u64() as u8);
    }),
    ("a lost line", |r, b| edit_lines(r, b, false)),
    ("a repeated line", |r, b| edit_lines(r, b, true)),
    ("an integer past 64 bits", huge_literal),
];

fn delete_key(rng: &mut Rng, root: &mut Value) {
    let Some(mut p) = pick_path(rng, root, |p, _| matches!(p.last(), Some(Step::Key(_)))) else {
        return;
    };
    let Some(Step::Key(k)) = p.pop() else {
        return;
    };
    if let Some(Value::Table(t)) = at_mut(root, &p) {
        t.remove(&k);
    }
}

fn swap_type(rng: &mut Rng, root: &mut Value) {
    let Some(p) = pick_path(rng, root, |_, _| true) else {
        return;
    };
    let new = match rng.below(7) {
        0 => Value::Integer(7),
        1 => Value::Integer(-3),
        2 => Value::String("x".into()),
        3 => Value::Boolean(true),
        4 => Value::Float(1.5),
        5 => Value::Array(vec![Value::Integer(1)]),
        _ => Value::Table(Table::new()),
    };
    if let Some(v) = at_mut(root, &p) {
        *v = new;
    }
}

fn extreme(rng: &mut Rng, root: &mut Value) {
    let Some(p) = pick_path(rng, root, |_, v| v.is_integer() || v.is_str()) else {
        return;
    };
    let Some(v) = at_mut(root, &p) else {
        return;
    };
    *v = if v.is_integer() {
        Value::Integer(rng.pick(&[0, -1, 1 << 32, 1 << 40, i64::MAX, i64::MIN, 1 << 24]))
    } else {
        Value::String(
            rng.pick(&[
                "0",
                "0K",
                "1024G",
                "64G",
                "4G",
                "8G",
                "3K",
                "1.5M",
                "-5M",
                "G",
                "",
                "99999999999999999999G",
                "17179869184K",
                "4096",
                "2M ",
                " 64k",
            ])
            .into(),
        )
    };
}

fn dangle(rng: &mut Rng, root: &mut Value) {
    const REFS: [&str; 6] = ["vma", "memory", "ref", "process", "name", "op"];
    let Some(p) = pick_path(rng, root, |p, v| {
        v.is_str() && matches!(p.last(), Some(Step::Key(k)) if REFS.contains(&k.as_str()))
    }) else {
        return;
    };
    if let Some(v) = at_mut(root, &p) {
        *v = Value::String(rng.pick(&["nope", "", "boot", "p0", "v1"]).into());
    }
}

fn unknown_key(rng: &mut Rng, root: &mut Value) {
    let p = pick_path(rng, root, |_, v| v.is_table()).unwrap_or_default();
    if let Some(Value::Table(t)) = at_mut(root, &p) {
        t.insert("bogus".into(), Value::Integer(1));
    }
}

fn duplicate(rng: &mut Rng, root: &mut Value) {
    let Some(p) = pick_path(rng, root, |_, v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    }) else {
        return;
    };
    if let Some(Value::Array(a)) = at_mut(root, &p) {
        let i = rng.below(a.len() as u64) as usize;
        let c = a[i].clone();
        a.push(c);
    }
}

fn move_op(rng: &mut Rng, root: &mut Value) {
    let Some(cpus) = root.get_mut("cpu").and_then(Value::as_array_mut) else {
        return;
    };
    if cpus.len() < 2 {
        return;
    }
    let from = rng.below(cpus.len() as u64) as usize;
    let to = (from + 1 + rng.below(cpus.len() as u64 - 1) as usize) % cpus.len();
    let op = match cpus[from].get_mut("ops").and_then(Value::as_array_mut) {
        Some(ops) if !ops.is_empty() => {
            let i = rng.below(ops.len() as u64) as usize;
            ops.remove(i)
        }
        _ => return,
    };
    if let Some(ops) = cpus[to].get_mut("ops").and_then(Value::as_array_mut) {
        let at = rng.below(ops.len() as u64 + 1) as usize;
        ops.insert(at, op);
    }
}

fn another_value(rng: &mut Rng, root: &mut Value) {
    let ops: Vec<&str> = op_fields().iter().map(|(n, _)| *n).collect();
    let values = |k: &str| -> Option<Vec<&str>> {
        if k == "op" {
            return Some(ops.clone());
        }
        ENUMS.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_vec())
    };
    let Some(p) = pick_path(rng, root, |p, v| {
        v.is_str() && matches!(p.last(), Some(Step::Key(k)) if values(k).is_some())
    }) else {
        return;
    };
    let Some(Step::Key(k)) = p.last() else {
        return;
    };
    let Some(vals) = values(k) else {
        return;
    };
    let new = rng.pick(&vals);
    if let Some(v) = at_mut(root, &p) {
        *v = Value::String(new.into());
    }
}

fn flip_bool(rng: &mut Rng, root: &mut Value) {
    let Some(p) = pick_path(rng, root, |_, v| v.is_bool()) else {
        return;
    };
    if let Some(Value::Boolean(b)) = at_mut(root, &p) {
        *b = !*b;
    }
}

fn off_by_one(rng: &mut Rng, root: &mut Value) {
    let Some(p) = pick_path(rng, root, |_, v| v.is_integer()) else {
        return;
    };
    if let Some(Value::Integer(n)) = at_mut(root, &p) {
        *n = if rng.chance(50) {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    }
}

fn edit_lines(rng: &mut Rng, b: &mut Vec<u8>, repeat: bool) {
    let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
    let i = rng.below(lines.len() as u64) as usize;
    if repeat {
        let l = lines[i].clone();
        lines.insert(i, l);
    } else {
        lines.remove(i);
    }
    *b = lines.join(&b'\n');
}

fn huge_literal(rng: &mut Rng, b: &mut Vec<u8>) {
    let runs: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                v.push((s, i));
            } else {
                i += 1;
            }
        }
        v
    };
    if runs.is_empty() {
        return;
    }
    let (s, e) = runs[rng.below(runs.len() as u64) as usize];
    let new = rng.pick(&[
        "18446744073709551616",
        "99999999999999999999",
        "9223372036854775808",
    ]);
    b.splice(s..e, new.bytes());
}

/// The text of a scenario table.
pub fn render(t: &Table) -> String {
    t.to_string()
}

/// A hostile variant of `t`: one to three mutations, of the tree or of the
/// text. Returns the bytes and the names of the mutations applied.
pub fn mutate(rng: &mut Rng, t: &Table) -> (Vec<u8>, Vec<&'static str>) {
    let mut root = Value::Table(t.clone());
    let mut names = Vec::new();
    let n = 1 + rng.below(3);
    let mut text_muts = Vec::new();
    for _ in 0..n {
        if rng.chance(70) {
            let (name, m) = MUTATIONS[rng.below(MUTATIONS.len() as u64) as usize];
            m(rng, &mut root);
            names.push(name);
        } else {
            text_muts.push(TEXT_MUTATIONS[rng.below(TEXT_MUTATIONS.len() as u64) as usize]);
        }
    }
    let mut bytes = match root {
        Value::Table(t) => render(&t),
        _ => String::new(),
    }
    .into_bytes();
    for (name, m) in text_muts {
        m(rng, &mut bytes);
        names.push(name);
    }
    (bytes, names)
}

/// What `mmsim check` would answer to a file, or why that answer would be
/// wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 2 with `file:line:column: message`.
    Refused(String),
    /// Exit 0.
    Clean,
    /// Exit 1: the kinds found.
    Found(Vec<Kind>),
    /// Wrong: a panic, an internal error (exit 3), or a refusal without a
    /// position.
    Defect(String),
}

/// A refusal: it must start with `file:LINE:COLUMN: `.
fn located(file: &str, message: String) -> Verdict {
    let rest = message.strip_prefix(file).and_then(|r| r.strip_prefix(':'));
    let ok = rest.is_some_and(|r| {
        let mut parts = r.splitn(3, ':');
        let num = |p: Option<&str>| {
            p.is_some_and(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        };
        num(parts.next()) && num(parts.next()) && parts.next().is_some_and(|m| m.len() > 1)
    });
    if ok {
        Verdict::Refused(message)
    } else {
        Verdict::Defect(format!("a refusal without file:line:column: {message}"))
    }
}

/// Runs `bytes` (named `file`) as `mmsim check` would, with `schedules`
/// PCT schedules from `seed`: see [`Verdict`].
pub fn exercise(bytes: &[u8], file: &str, schedules: u64, seed: u64) -> Verdict {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let sc = match parse_bytes(bytes, file) {
            Ok(s) => s,
            Err(e) => return located(file, e.to_string()),
        };
        let plan = match Plan::new(sc, &Overrides::default()) {
            Ok(p) => p,
            Err(e) => return located(file, e.to_string()),
        };
        let out = explore(
            Arc::new(plan),
            Options {
                strategy: Strategy::Pct { depth: 3 },
                iterations: schedules,
                seed,
                shard: (0, 1),
                keep_going: false,
                time_limit: None,
                jobs: 1,
                boot: Default::default(),
                progress: None,
            },
        );
        if let Some(e) = out.error {
            return Verdict::Defect(format!("internal error: {e}"));
        }
        if let Some(t) = out.too_long {
            return match t.op {
                Some((_, loc, _)) => Verdict::Refused(format!(
                    "{file}:{}:{}: schedule longer than the bound",
                    loc.line, loc.column
                )),
                None => Verdict::Defect("a schedule past the step bound, in no operation".into()),
            };
        }
        if out.violations.is_empty() {
            Verdict::Clean
        } else {
            Verdict::Found(out.violations.iter().map(|f| f.violation.kind).collect())
        }
    }));
    match r {
        Ok(v) => v,
        Err(p) => {
            let m = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Verdict::Defect(format!("panic: {m}"))
        }
    }
}
